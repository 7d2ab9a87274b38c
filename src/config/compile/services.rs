//! What the themaportaal and applications rest on: the service and life-event rules, compiled
//! against what the adapters map (and kept), each service's application schema (compiled and
//! kept) and delivery, and the references between services, life events and themes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::gateway::GatewayFile;
use super::vocabulary;
use crate::config::load::{ConfigError, did_you_mean};
use crate::config::yaml::Pos;
use crate::model::{ApplicationDef, ServiceDef};

/// Schemas may not fetch anything: a `$ref` to a remote document is refused.
pub struct NoRemote;

impl jsonschema::Retrieve for NoRemote {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("remote references are not allowed ({uri})").into())
    }
}

impl GatewayFile<'_> {
    /// Rules: compiled against what the adapters actually map, and kept.
    pub(super) fn rules(&self, errors: &mut Vec<ConfigError>) -> crate::rules::Catalogue {
        let GatewayFile { file, tree, gw, .. } = *self;
        let mut catalogue = crate::rules::Catalogue {
            vocab: vocabulary(gw, self.adapters),
            ..Default::default()
        };
        if self.all_loaded {
            let vocab = catalogue.vocab.clone();
            let mut rule = |path: [&str; 3], source: &str| match crate::rules::Rule::compile(
                source, &vocab,
            ) {
                Ok(r) => Some(r),
                Err(problems) => {
                    for p in problems {
                        errors.push(
                            ConfigError::new(file, tree.pos_at_keys(&path), format!("{}.{}: {p}", path[0], path[1]))
                                .hint("rules are CEL, e.g. `persoon.leeftijd >= 66` or `uitkeringen.exists(u, u.soort == 'WW')`"),
                        );
                    }
                    None
                }
            };
            for (id, s) in &gw.services {
                if let Some(r) = rule(["services", id, "relevant_when"], &s.relevant_when) {
                    catalogue.services.insert(id.clone(), r);
                }
            }
            for (id, l) in &gw.life_events {
                if let Some(r) = rule(["life_events", id, "rule"], &l.rule) {
                    catalogue.life_events.insert(id.clone(), r);
                }
            }
        }
        catalogue
    }

    /// Each service's application: its schema compiled (and kept), its delivery checked.
    pub(super) fn applications(
        &self,
        errors: &mut Vec<ConfigError>,
    ) -> BTreeMap<String, Arc<jsonschema::Validator>> {
        let GatewayFile { file, gw, .. } = *self;
        let mut schemas = BTreeMap::new();
        for (id, svc) in &gw.services {
            let Some(app) = &svc.application else {
                continue;
            };
            let pos = self.at(&["services", id, "application"]);
            match jsonschema::options()
                .with_retriever(NoRemote)
                .build(&app.schema)
            {
                Ok(v) => {
                    schemas.insert(id.clone(), Arc::new(v));
                }
                Err(e) => errors.push(
                    ConfigError::new(file, self.at(&["services", id, "application", "schema"]), format!("service `{id}`: the schema is not valid JSON Schema: {e}"))
                        .hint("write a JSON Schema (2020-12) in YAML: `{type: object, required: [...], properties: {...}}`"),
                ),
            }
            self.delivery(id, svc, app, pos, errors);
        }
        schemas
    }

    /// A service's delivery: an endpoint it can reach, one protocol block, and templates that
    /// use only what an application has (problems at the service's `application`, `pos`).
    fn delivery(
        &self,
        id: &str,
        svc: &ServiceDef,
        app: &ApplicationDef,
        pos: Pos,
        errors: &mut Vec<ConfigError>,
    ) {
        let GatewayFile { file, gw, .. } = *self;
        let d = &app.delivery;
        let org = gw.organisations.get(&svc.organisation);
        let base = org.and_then(|o| o.base_url.as_deref());
        if !(d.endpoint.starts_with("http://") || d.endpoint.starts_with("https://"))
            && (!d.endpoint.starts_with('/') || base.is_none())
        {
            errors.push(ConfigError::new(file, pos, format!("service `{id}`: delivery endpoint `{}` is neither a URL nor a path under the organisation's base_url", d.endpoint)));
        } else {
            // As the delivery worker will call it.
            let full = d.url(base);
            if url::Url::parse(&full).is_err() || full.parse::<http::Uri>().is_err() {
                errors.push(ConfigError::new(
                    file,
                    pos,
                    format!("service `{id}`: delivery endpoint `{full}` is not a valid URL"),
                ));
            }
        }
        if d.call().is_none() {
            let (need, other) = match d.protocol {
                crate::model::Protocol::Soap => ("soap", "rest"),
                crate::model::Protocol::Rest => ("rest", "soap"),
            };
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("service `{id}`: a {need} delivery needs `{need}:` and no `{other}:`"),
                )
                .hint(format!("give the delivery one `{need}:` block")),
            );
        }
        if d.soap
            .as_ref()
            .is_some_and(|s| s.addressing && s.action.is_none())
        {
            errors.push(
                ConfigError::new(
                    file,
                    pos,
                    format!("service `{id}`: `addressing: true` needs a `soap.action`"),
                )
                .hint(
                    "WS-Addressing makes `wsa:Action` mandatory; give the operation's action URI",
                ),
            );
        }
        let props: Vec<String> = app
            .schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let mut texts: Vec<String> = Vec::new();
        if let Some(s) = &d.soap {
            texts.push(s.body.clone());
        }
        if let Some(r) = &d.rest {
            if let Some(b) = &r.body {
                texts.push(b.to_string());
            }
            texts.extend(r.headers.values().cloned());
        }
        for t in texts {
            for name in crate::protocol::template::placeholders(&t) {
                let ok = ["bsn", "application_id", "service"].contains(&name.as_str())
                    || name
                        .strip_prefix("data.")
                        .is_some_and(|p| props.iter().any(|x| x == p));
                if !ok {
                    errors.push(
                        ConfigError::new(file, pos, format!("service `{id}`: unknown placeholder `{{{{{name}}}}}` in the delivery template"))
                            .hint(format!("use bsn, application_id, service, or data.<one of: {}>", props.join(", "))),
                    );
                }
            }
        }
    }

    /// Services, life events and themes refer only to what is declared.
    pub(super) fn service_references(&self, errors: &mut Vec<ConfigError>) {
        let GatewayFile { file, gw, .. } = *self;
        let service_ids: Vec<String> = gw.services.keys().cloned().collect();
        for (id, s) in &gw.services {
            if !gw.organisations.contains_key(&s.organisation) {
                errors.push(ConfigError::new(
                    file,
                    self.at(&["services", id, "organisation"]),
                    format!(
                        "service `{id}`: organisation `{}` is not declared",
                        s.organisation
                    ),
                ));
            }
        }
        let mut unknown_service = |path: &[&str], sid: &str| {
            if !gw.services.contains_key(sid) {
                errors.push(
                    ConfigError::new(file, self.at(path), format!("unknown service `{sid}`"))
                        .hint_opt(did_you_mean(sid, &service_ids)),
                );
            }
        };
        for (id, l) in &gw.life_events {
            for sid in &l.services {
                unknown_service(&["life_events", id, "services"], sid);
            }
        }
        for (id, t) in &gw.themes {
            for sid in &t.services {
                unknown_service(&["themes", id, "services"], sid);
            }
        }
        for (id, t) in &gw.themes {
            for le in &t.life_events {
                if !gw.life_events.contains_key(le) {
                    errors.push(ConfigError::new(
                        file,
                        self.at(&["themes", id, "life_events"]),
                        format!("theme `{id}`: unknown life event `{le}`"),
                    ));
                }
            }
        }
    }
}
