//! What the audit log keeps: the [`AccessRecord`] of each audited action, and the
//! [`Completion`] that gives an access written while still under way its outcome. Plain data:
//! the gateway makes them, [`crate::audit`] is the sink they must reach before an answer leaves,
//! and every backend persists them as they are (the record's canonical JSON is what the chain
//! hashes). Nothing here does I/O.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bsn::Bsn;

/// One audited action. Field order is the canonical order hashed into the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessRecord {
    /// `dossier.read`, `access-log.read`, `application.submit`, `adapter.change`, ...
    pub kind: String,
    #[serde(with = "crate::timefmt")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::timefmt")]
    pub time: DateTime<Utc>,
    pub trace_id: String,
    pub span_id: String,
    /// The caller's span when it sent a `traceparent` (Logboek: foreign operation).
    pub foreign_span_id: Option<String>,
    /// `citizen`, `employee`, `partner` or `operator`.
    pub actor_type: String,
    pub actor: String,
    pub actor_organisation: Option<String>,
    pub actor_roles: Vec<String>,
    /// The data subject, when the action concerns one person.
    pub bsn: Option<Bsn>,
    pub view: Option<String>,
    pub purpose: Option<String>,
    pub processing_activity: Option<String>,
    pub sections: Vec<String>,
    /// `(adapter, status)` per source consulted (statuses are the gateway's own words, so
    /// borrowed when made; owned when read back).
    pub sources: Vec<(Arc<str>, Cow<'static, str>)>,
    /// `served`, `partial`, `refused: ...`, `failed: ...`.
    pub outcome: String,
    /// Kind-specific details (an application id, a descriptor hash).
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl AccessRecord {
    /// A record of `kind` by `actor` (a citizen or employee; `None` for partners and
    /// operators, whose fields the caller sets) at this moment, in trace `trace`, about `bsn`.
    /// Everything else starts empty and outcome `served`.
    pub fn new(
        kind: &str,
        actor: Option<&crate::auth::Actor>,
        trace: &crate::trace::TraceContext,
        bsn: Option<Bsn>,
    ) -> AccessRecord {
        use crate::auth::Actor;
        let now = chrono::Utc::now();
        let (actor_type, organisation, roles) = match actor {
            Some(Actor::Citizen { .. }) => ("citizen", None, Vec::new()),
            Some(Actor::Employee {
                organisation,
                roles,
                ..
            }) => ("employee", Some(organisation.clone()), roles.clone()),
            None => ("partner", None, Vec::new()),
        };
        AccessRecord {
            kind: kind.to_string(),
            started_at: now,
            time: now,
            trace_id: trace.trace_id.clone(),
            span_id: trace.span_id.clone(),
            foreign_span_id: trace.parent_span_id.clone(),
            actor_type: actor_type.to_string(),
            actor: actor.map(|a| a.subject().to_string()).unwrap_or_default(),
            actor_organisation: organisation,
            actor_roles: roles,
            bsn,
            view: None,
            purpose: None,
            processing_activity: None,
            sections: Vec::new(),
            sources: Vec::new(),
            outcome: "served".into(),
            details: None,
        }
    }
}

impl AccessRecord {
    /// Writes the record's JSON into `out`, byte for byte as its `Serialize` impl writes it
    /// (the canonical form the chain hashes; a test holds them equal): through serde it was
    /// most of what the durable audit costs the request's own thread.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::jsonout::{array, opt_str as opt, str, time};
        let list = |out: &mut Vec<u8>, items: &[String]| array(out, items, |o, v| str(o, v));
        out.extend_from_slice(b"{\"kind\":");
        str(out, &self.kind);
        out.extend_from_slice(b",\"started_at\":");
        time(out, &self.started_at);
        out.extend_from_slice(b",\"time\":");
        time(out, &self.time);
        out.extend_from_slice(b",\"trace_id\":");
        str(out, &self.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        str(out, &self.span_id);
        out.extend_from_slice(b",\"foreign_span_id\":");
        opt(out, self.foreign_span_id.as_deref());
        out.extend_from_slice(b",\"actor_type\":");
        str(out, &self.actor_type);
        out.extend_from_slice(b",\"actor\":");
        str(out, &self.actor);
        out.extend_from_slice(b",\"actor_organisation\":");
        opt(out, self.actor_organisation.as_deref());
        out.extend_from_slice(b",\"actor_roles\":");
        list(out, &self.actor_roles);
        out.extend_from_slice(b",\"bsn\":");
        opt(out, self.bsn.as_ref().map(Bsn::as_str));
        out.extend_from_slice(b",\"view\":");
        opt(out, self.view.as_deref());
        out.extend_from_slice(b",\"purpose\":");
        opt(out, self.purpose.as_deref());
        out.extend_from_slice(b",\"processing_activity\":");
        opt(out, self.processing_activity.as_deref());
        out.extend_from_slice(b",\"sections\":");
        list(out, &self.sections);
        out.extend_from_slice(b",\"sources\":");
        array(out, &self.sources, |o, (adapter, status)| {
            array(o, [&**adapter, &**status], str)
        });
        out.extend_from_slice(b",\"outcome\":");
        str(out, &self.outcome);
        out.extend_from_slice(b",\"details\":");
        match &self.details {
            // Writing into a Vec cannot fail.
            Some(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

/// What became of an access whose record was written before its outcome was known (see
/// [`crate::audit::AuditSink::begin`]): when it ended, `served`/`partial`/`failed: ...`, and
/// each source's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    #[serde(with = "crate::timefmt")]
    pub time: DateTime<Utc>,
    pub outcome: String,
    pub sources: Vec<(Arc<str>, Cow<'static, str>)>,
}

impl Completion {
    /// The record as it reads with its outcome.
    pub fn apply(self, rec: &mut AccessRecord) {
        rec.time = self.time;
        rec.outcome = self.outcome;
        rec.sources = self.sources;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_written_by_hand_is_byte_for_byte_its_serde_form() {
        let t = DateTime::from_timestamp(1_764_355_219, 875_356_957).unwrap_or_default();
        let bare = AccessRecord {
            kind: "dossier.read".into(),
            started_at: t,
            time: t + chrono::Duration::microseconds(5),
            trace_id: "d26a93d7e6a9d3df1d1de95851c41c3c".into(),
            span_id: "76e54ffa9d175ffd".into(),
            foreign_span_id: None,
            actor_type: "citizen".into(),
            actor: "digid:999993653".into(),
            actor_organisation: None,
            actor_roles: vec![],
            bsn: None,
            view: None,
            purpose: None,
            processing_activity: None,
            sections: vec![],
            sources: vec![],
            outcome: "served".into(),
            details: None,
        };
        let full = AccessRecord {
            foreign_span_id: Some("00f067aa0ba902b7".into()),
            actor_type: "employee".into(),
            actor: "mw \"K. de Vries\"\\uwv".into(),
            actor_organisation: Some("UWV".into()),
            actor_roles: vec!["klantmanager".into(), "tab\there".into()],
            bsn: Some(Bsn::parse("999993653").unwrap()),
            view: Some("medewerker".into()),
            purpose: Some("Aanvraag WW".into()),
            processing_activity: Some("https://register.example/pa/1".into()),
            sections: vec!["inkomen".into(), "persoon".into()],
            sources: vec![
                (Arc::from("brp-personen"), "cached".into()),
                (Arc::from("uwv\nuitkeringen"), "failed: timeout".into()),
            ],
            outcome: "partial".into(),
            details: Some(json!({"application": "a/1", "n": 3, "nested": [true, null]})),
            ..bare.clone()
        };
        for rec in [bare, full] {
            let mut out = Vec::new();
            rec.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                serde_json::to_string(&rec).unwrap()
            );
            // And it reads back as the same record.
            assert_eq!(serde_json::from_slice::<AccessRecord>(&out).unwrap(), rec);
        }
    }
}
