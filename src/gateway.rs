//! The gateway: fan-out to the adapters a view needs, merge, view filter, audit.
//!
//! A [`Gateway`] holds the current [`Runtime`] (config snapshot + adapter clients + token
//! verifier) behind an `ArcSwap`: a request takes the snapshot once and finishes on it, and a
//! reload swaps in a whole new one atomically. The cache and the audit sink live outside the
//! snapshot, so they survive reloads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;
use serde_json::{Map, Value};

use tower::ServiceExt;

use crate::adapter::budget::InflightBudget;
use crate::adapter::{AdapterClient, CallContext, SourceAnswer, SourceError};
use crate::audit::{AccessRecord, AuditError, AuditSink, Begun, Completion};
use crate::auth::{Actor, Verifier};
use crate::bsn::Bsn;
use crate::cache::{CacheKey, Freshness, Policy, SharedCache, SourceCache};
use crate::config::compile::Config;
use crate::dossier::{Conflict, Rendered};
use crate::metrics::Metrics;
use crate::model::{Audience, ViewDef};
use crate::protocol::client::Outbound;
use crate::resilience::{self, Breaker, Call, CircuitState, Stack};
use crate::trace::TraceContext;

/// One adapter at run time: its client, its resilience stack and breaker.
pub struct AdapterRuntime {
    pub client: AdapterClient,
    pub stack: Stack,
    pub breaker: Arc<Breaker>,
    /// Its counters on the dossier path.
    pub series: crate::metrics::AdapterSeries,
    /// The part of its cache key that changes when its descriptor does.
    pub cache_version: Arc<str>,
    /// The outcome of the latest dossier request that needed this source (operators' view).
    pub last: std::sync::Mutex<Option<LastStatus>>,
    /// "Source failed." is logged once per interval per adapter, with the count since.
    pub failure_log: crate::lograte::LogGate,
}

/// The latest outcome of one source.
#[derive(Debug, Clone, Serialize)]
pub struct LastStatus {
    pub status: &'static str,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AdapterRuntime {
    pub fn circuit(&self) -> CircuitState {
        self.breaker.state()
    }

    pub fn last_status(&self) -> Option<LastStatus> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything that changes on reload, swapped as one.
pub struct Runtime {
    pub config: Arc<Config>,
    pub adapters: BTreeMap<String, Arc<AdapterRuntime>>,
    pub verifier: Arc<Verifier>,
    /// Compiled service and life-event rules.
    pub catalogue: Arc<crate::rules::Catalogue>,
    /// Rendered views of recent answers; part of the snapshot, so a reload (new views,
    /// sections, authority orders) starts empty.
    pub renders: RenderCache,
    /// Each view's [`Plan`] for a read of all its sections (the usual request), made once
    /// per snapshot instead of once per read.
    plans: BTreeMap<String, Plan>,
}

/// The adapters a read of some sections calls, in config order, and the ones it skips (in
/// id order, reported as `skipped`).
struct Plan {
    needed: Vec<Arc<AdapterRuntime>>,
    skipped: Vec<Arc<AdapterRuntime>>,
}

impl Plan {
    fn new(
        config: &Config,
        adapters: &BTreeMap<String, Arc<AdapterRuntime>>,
        wanted: &BTreeSet<&str>,
    ) -> Plan {
        let needed: Vec<Arc<AdapterRuntime>> = config
            .adapters_for(wanted)
            .filter_map(|spec| adapters.get(spec.id()).cloned())
            .collect();
        let skipped = adapters
            .values()
            .filter(|a| !needed.iter().any(|n| Arc::ptr_eq(n, a)))
            .cloned()
            .collect();
        Plan { needed, skipped }
    }
}

/// The share of `cache.max_bytes` given to the render cache (one eighth); the source cache gets
/// the rest, so the two together stay within the budget.
const RENDER_SHARE: u64 = 8;

/// The bytes of `cache.max_bytes` left to the source cache.
fn source_share(max_bytes: u64) -> u64 {
    max_bytes - max_bytes / RENDER_SHARE
}

impl Runtime {
    /// Builds a runtime. Adapters whose definition did not change keep their state (breaker,
    /// concurrency limit, retry budget) from `previous`. Every adapter reads its answers within
    /// the gateway's `budget` for answers in flight.
    pub fn build(
        config: Config,
        http: &Outbound,
        metrics: &Arc<Metrics>,
        budget: &Arc<InflightBudget>,
        previous: Option<&Runtime>,
    ) -> Runtime {
        let verifier = config.compiled.verifier.clone();
        let catalogue = config.compiled.catalogue.clone();
        let adapters = config
            .adapters
            .iter()
            .map(|(id, spec)| {
                let kept = previous
                    .and_then(|p| p.adapters.get(id))
                    .filter(|a| a.client.spec.fingerprint == spec.fingerprint)
                    .cloned();
                let rt = kept.unwrap_or_else(|| {
                    let client = AdapterClient::new(spec.clone(), http).with_budget(budget.clone());
                    let breaker = Arc::new(Breaker::new(spec.def.resilience.circuit.clone()));
                    let stack = resilience::build(client.clone(), breaker.clone(), metrics.clone());
                    Arc::new(AdapterRuntime {
                        series: metrics.adapter_series(client.id()),
                        cache_version: Arc::from(spec.fingerprint.get(..16).unwrap_or_default()),
                        client,
                        stack,
                        breaker,
                        last: std::sync::Mutex::new(None),
                        failure_log: crate::lograte::LogGate::default(),
                    })
                });
                (id.clone(), rt)
            })
            .collect::<BTreeMap<_, _>>();
        // An adapter gone (a registration deleted, a file removed) takes its series with it:
        // partners choose ids, so series kept for every id ever used would grow without bound.
        if let Some(p) = previous {
            for gone in p.adapters.keys().filter(|id| !adapters.contains_key(*id)) {
                metrics.forget_adapter(gone);
            }
        }
        let plans = config
            .gateway
            .views
            .iter()
            .map(|(name, view)| {
                let all: BTreeSet<&str> = view.sections.keys().map(String::as_str).collect();
                (name.clone(), Plan::new(&config, &adapters, &all))
            })
            .collect();
        let renders = RenderCache::new(if config.gateway.cache.enabled {
            config.gateway.cache.max_bytes.0 / RENDER_SHARE
        } else {
            0
        });
        Runtime {
            config: Arc::new(config),
            adapters,
            verifier,
            catalogue,
            renders,
            plans,
        }
    }
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot build the outbound HTTP client: {0}")]
    HttpClient(String),
    #[error("cannot set up the shared cache: {0}")]
    SharedCache(#[from] crate::cache::shared::SharedCacheError),
}

/// The shared cache `cache.shared` asks for (none without it, or with the cache off).
fn shared_cache(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<SharedCache>>, crate::cache::shared::SharedCacheError> {
    let cache = &config.gateway.cache;
    match &cache.shared {
        Some(sh) if cache.enabled => SharedCache::new(sh, metrics.clone()).map(Some),
        _ => Ok(None),
    }
}

/// Why a caller may not read a dossier through a view.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("unknown view `{0}`")]
    UnknownView(String),
    #[error("view `{0}` is not for this kind of caller")]
    WrongAudience(String),
    #[error("none of your roles may use view `{0}`")]
    RoleNotAllowed(String),
    #[error("view `{view}` is for employees of {allowed}, not of `{organisation}`")]
    OrganisationNotAllowed {
        view: String,
        organisation: String,
        allowed: String,
    },
    #[error("state the purpose of this access in the `X-Purpose` header (doelbinding)")]
    PurposeMissing,
    #[error("purpose `{purpose}` is not allowed for view `{view}`; allowed: {allowed}")]
    PurposeNotAllowed {
        view: String,
        purpose: String,
        allowed: String,
    },
    #[error("a citizen can only read their own dossier")]
    OtherSubject,
    #[error("unknown section `{0}` in this view")]
    UnknownSection(String),
}

/// Why a dossier could not be served at all.
#[derive(Debug, thiserror::Error)]
pub enum DossierError {
    #[error("no source answered: {0}")]
    NoSource(String),
    #[error("no source answered before the deadline")]
    AllTimedOut,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// One dossier request, after authentication.
#[derive(Debug, Clone)]
pub struct DossierRequest {
    pub actor: Actor,
    pub bsn: Bsn,
    pub view: String,
    pub sections: Option<Vec<String>>,
    pub purpose: Option<String>,
    /// `Cache-Control: no-cache` from an employee: fetch fresh.
    pub no_cache: bool,
    pub trace: TraceContext,
    /// When the request arrived (the processing record's start).
    pub started_at: DateTime<Utc>,
}

/// Status of one source in one answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceReport {
    pub adapter: Arc<str>,
    pub organisation: Arc<str>,
    pub status: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::option::serialize"
    )]
    pub fetched_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SourceReport {
    /// The report as its `Serialize` impl writes it, into `out` (see [`DossierResponse::to_json`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        use crate::jsonout;
        out.extend_from_slice(b"{\"adapter\":");
        jsonout::str(out, &self.adapter);
        out.extend_from_slice(b",\"organisation\":");
        jsonout::str(out, &self.organisation);
        out.extend_from_slice(b",\"status\":");
        jsonout::str(out, self.status);
        out.extend_from_slice(b",\"latency_ms\":");
        jsonout::u64(out, self.latency_ms);
        if let Some(age) = self.age_ms {
            out.extend_from_slice(b",\"age_ms\":");
            jsonout::u64(out, age);
        }
        if let Some(t) = &self.fetched_at {
            out.extend_from_slice(b",\"fetched_at\":");
            jsonout::time(out, t);
        }
        if let Some(e) = &self.error {
            out.extend_from_slice(b",\"error\":");
            jsonout::str(out, e);
        }
        out.push(b'}');
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub bsn: Bsn,
}

/// The dossier document a portal receives. Serialised as `subject`, `view`, `purpose` (when
/// set), `complete`, `generated_at`, `sections`, `sources`, `conflicts`, `trace_id`.
#[derive(Debug, Clone)]
pub struct DossierResponse {
    pub subject: Subject,
    pub view: String,
    pub purpose: Option<String>,
    pub complete: bool,
    pub generated_at: DateTime<Utc>,
    /// The view's rendering of the answers: sections and conflicts (shared with the render
    /// cache; never holds anything of this request alone).
    pub rendered: Arc<Rendered>,
    /// Sections the gateway adds itself (`zaken`), shown with the rendered ones in key order;
    /// one here replaces a rendered section of the same name.
    pub own_sections: Map<String, Value>,
    pub sources: Vec<SourceReport>,
    pub trace_id: String,
    /// Time spent waiting for sources (for the overhead metric; not serialised).
    pub upstream_wait: Duration,
}

impl DossierResponse {
    /// The document as the API sends it, serialised into a buffer sized for it up front.
    pub fn to_json(&self) -> Vec<u8> {
        use crate::jsonout;
        let room = self.rendered.text_len() + 192 * self.sources.len() + 512;
        let mut out = Vec::with_capacity(room);
        // By hand, exactly as the `Serialize` impl below writes it (a test holds them equal):
        // the envelope and five source reports through serde were a tenth of a cached read's
        // CPU. The rendered sections and the conflicts are already-serialised JSON.
        out.extend_from_slice(b"{\"subject\":{\"bsn\":");
        jsonout::str(&mut out, self.subject.bsn.as_str());
        out.extend_from_slice(b"},\"view\":");
        jsonout::str(&mut out, &self.view);
        if let Some(p) = &self.purpose {
            out.extend_from_slice(b",\"purpose\":");
            jsonout::str(&mut out, p);
        }
        out.extend_from_slice(if self.complete {
            b",\"complete\":true,\"generated_at\":"
        } else {
            b",\"complete\":false,\"generated_at\":"
        });
        jsonout::time(&mut out, &self.generated_at);
        out.extend_from_slice(b",\"sections\":");
        self.rendered.write_sections(&self.own_sections, &mut out);
        out.extend_from_slice(b",\"sources\":");
        jsonout::array(&mut out, &self.sources, |o, r| r.write_json(o));
        out.extend_from_slice(b",\"conflicts\":");
        // Already-serialised JSON: writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &self.rendered.conflicts_out());
        out.extend_from_slice(b",\"trace_id\":");
        jsonout::str(&mut out, &self.trace_id);
        out.push(b'}');
        out
    }

    /// The `sections` object as the client sees it (a copy: for rules and themes).
    pub fn sections(&self) -> Map<String, Value> {
        let mut all = self.rendered.sections();
        all.extend(self.own_sections.clone());
        all
    }

    pub fn conflicts(&self) -> &[Conflict] {
        &self.rendered.conflicts
    }
}

impl Serialize for DossierResponse {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DossierResponse", 9)?;
        st.serialize_field("subject", &self.subject)?;
        st.serialize_field("view", &self.view)?;
        match &self.purpose {
            Some(p) => st.serialize_field("purpose", p)?,
            None => st.skip_field("purpose")?,
        }
        st.serialize_field("complete", &self.complete)?;
        st.serialize_field(
            "generated_at",
            crate::timefmt::rfc3339(&self.generated_at).as_str(),
        )?;
        st.serialize_field("sections", &self.rendered.sections_with(&self.own_sections))?;
        st.serialize_field("sources", &self.sources)?;
        st.serialize_field("conflicts", &self.rendered.conflicts_out())?;
        st.serialize_field("trace_id", &self.trace_id)?;
        st.end()
    }
}

/// What a rendering depends on besides the config snapshot (the cache lives in the snapshot):
/// the view, the requested sections, the subject and the identity of every answer (adapter
/// and fetch time; a new fetch is a new identity). Source statuses and ages are not part of
/// a rendering, so a cached one never shows a wrong age.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RenderKey {
    view: String,
    /// The sections asked for, or `None` for all of the view (the usual request).
    sections: Option<Vec<String>>,
    bsn: Bsn,
    answers: Vec<(Arc<str>, DateTime<Utc>)>,
}

/// Renderings of recent dossiers, bounded by an estimate of their bytes.
pub struct RenderCache {
    cache: Option<moka::future::Cache<RenderKey, Arc<Rendered>, foldhash::fast::RandomState>>,
}

/// A fan-out that answers within this is recorded whole, after it: one record with its
/// outcome, one journal frame and one index row. One that takes longer has its record written
/// from then on, concurrently, and its outcome after it: the fsync is then not added after a
/// slow source. At saturation, with sources that answer at once (load bench (f)), fan-outs take
/// 1 to 3 ms; recorded in two halves they cost 145-158 µs of server CPU per request, whole
/// 122-136 (journal 9.5-10.7 -> 5.9-7.1 µs, index 5.1-5.5 -> 3.9-4.1), and durable/log-only fell
/// from 1.21-1.26 to 1.06-1.16 (3 interleaved runs each). Against sources of 20 ms (load
/// bench (b)) nothing changes: the record is started at 3 ms and synced long before the
/// answers (p99 over the slowest source +0.34 ms for 3 sources, +0.64 for 10). The cost in
/// latency is bounded: a fan-out within this waits for one fsync after it rather than beside
/// it, and one just past it waits at most this much longer.
const WHOLE_WITHIN: Duration = Duration::from_millis(3);

/// How long a rendering is kept after its last use.
const RENDER_IDLE: Duration = Duration::from_secs(300);

impl RenderCache {
    /// A cache of `max_bytes` (by estimate), or none when `max_bytes` is 0.
    pub fn new(max_bytes: u64) -> RenderCache {
        RenderCache {
            cache: (max_bytes > 0).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(max_bytes)
                    .weigher(|_: &RenderKey, v: &Arc<Rendered>| v.weight())
                    .time_to_idle(RENDER_IDLE)
                    .build_with_hasher(foldhash::fast::RandomState::default())
            }),
        }
    }

    /// Entry count and weighted size (bytes, estimated).
    pub fn stats(&self) -> (u64, u64) {
        self.cache
            .as_ref()
            .map_or((0, 0), |c| (c.entry_count(), c.weighted_size()))
    }
}

/// Checks that `actor` may read `bsn` through `view` for `purpose`; returns the view.
pub fn authorize<'c>(
    config: &'c Config,
    actor: &Actor,
    bsn: &Bsn,
    view: &str,
    purpose: Option<&str>,
) -> Result<&'c ViewDef, AccessError> {
    let v = config
        .gateway
        .views
        .get(view)
        .ok_or_else(|| AccessError::UnknownView(view.to_string()))?;
    match actor {
        Actor::Citizen { bsn: own, .. } => {
            if v.audience != Audience::Citizen {
                return Err(AccessError::WrongAudience(view.to_string()));
            }
            if own != bsn {
                return Err(AccessError::OtherSubject);
            }
        }
        Actor::Employee {
            roles,
            organisation,
            ..
        } => {
            if v.audience != Audience::Employee {
                return Err(AccessError::WrongAudience(view.to_string()));
            }
            if !v.open_to_organisation(organisation) {
                return Err(AccessError::OrganisationNotAllowed {
                    view: view.to_string(),
                    organisation: organisation.clone(),
                    allowed: v.organisations.join(", "),
                });
            }
            if !v.open_to_roles(roles) {
                return Err(AccessError::RoleNotAllowed(view.to_string()));
            }
            let p = purpose.ok_or(AccessError::PurposeMissing)?;
            if !v.purposes.contains_key(p) {
                return Err(AccessError::PurposeNotAllowed {
                    view: view.to_string(),
                    purpose: p.to_string(),
                    allowed: v.purposes.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
    }
    Ok(v)
}

pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    pub cache: SourceCache,
    pub metrics: Arc<Metrics>,
    audit: Arc<dyn AuditSink>,
    http: Outbound,
    /// Bytes of source answers being read and mapped, across all adapters (outside the
    /// snapshot: calls in flight over a reload still hold theirs).
    pub inflight: Arc<InflightBudget>,
}

/// Where a dossier read's audit stands before its outcome is known: the whole record still to
/// be written (every source answered at once), or written already by `begin`.
enum Audited {
    Whole(Box<AccessRecord>),
    Begun(Begun),
}

struct Outcome {
    report: SourceReport,
    answer: Option<Arc<SourceAnswer>>,
    timed_out: bool,
}

impl Gateway {
    pub fn new(config: Config, audit: Arc<dyn AuditSink>) -> Result<Gateway, GatewayError> {
        let http = Outbound::shared().map_err(GatewayError::HttpClient)?;
        let cache = SourceCache::new(
            source_share(config.gateway.cache.max_bytes.0),
            config.gateway.cache.enabled,
        );
        let metrics = Arc::new(Metrics::new());
        cache.set_shared(shared_cache(&config, &metrics)?);
        let limits = &config.gateway.limits;
        let inflight = InflightBudget::new(
            limits.max_inflight_response_bytes.0,
            limits.max_inflight_percent_per_organisation,
        );
        let runtime = Runtime::build(config, &http, &metrics, &inflight, None);
        Ok(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            cache,
            metrics,
            audit,
            http,
            inflight,
        })
    }

    /// The shared outbound client (its connection pool), for calls outside a source read:
    /// adapter test calls, deliveries.
    pub fn outbound(&self) -> &Outbound {
        &self.http
    }

    /// The current snapshot; a request uses one snapshot from start to end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new, already validated config (everything in it is compiled: this cannot
    /// fail). The shared cache stays as it is (connection, breaker, counts) unless
    /// `cache.shared` changed.
    pub fn swap(&self, config: Config) {
        let previous = self.runtime.load_full();
        if previous.config.gateway.cache.shared != config.gateway.cache.shared {
            match shared_cache(&config, &self.metrics) {
                Ok(shared) => self.cache.set_shared(shared),
                // Checked when the config loaded; should it fail still, run without it.
                Err(e) => {
                    tracing::error!(error = %e, "The new `cache.shared` cannot be used; running without a shared cache.");
                    self.cache.set_shared(None);
                }
            }
        }
        let limits = &config.gateway.limits;
        let (limit, share) = (
            limits.max_inflight_response_bytes.0,
            limits.max_inflight_percent_per_organisation,
        );
        let rt = Runtime::build(
            config,
            &self.http,
            &self.metrics,
            &self.inflight,
            Some(&previous),
        );
        self.inflight.set_limits(limit, share);
        self.runtime.store(Arc::new(rt));
    }

    /// Fetches, merges, filters and audits one dossier.
    pub async fn dossier(
        &self,
        rt: &Runtime,
        view: &ViewDef,
        req: DossierRequest,
    ) -> Result<DossierResponse, DossierError> {
        let config = &rt.config;
        let wanted: BTreeSet<&str> = view
            .sections
            .keys()
            .map(String::as_str)
            .filter(|s| {
                req.sections
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|o| o == s))
            })
            .collect();

        let started = Instant::now();
        let deadline = started + config.gateway.deadline.0;
        let made;
        let plan = match (&req.sections, rt.plans.get(&req.view)) {
            (None, Some(plan)) => plan,
            _ => {
                made = Plan::new(config, &rt.adapters, &wanted);
                &made
            }
        };
        let needed = &plan.needed;
        let mut record =
            AccessRecord::new("dossier.read", Some(&req.actor), &req.trace, Some(req.bsn));
        record.started_at = req.started_at;
        record.view = Some(req.view.clone());
        record.purpose = req.purpose.clone();
        record.processing_activity = req
            .purpose
            .as_ref()
            .and_then(|p| view.purposes.get(p))
            .and_then(|p| p.processing_activity.clone());
        record.sections = wanted.iter().map(|s| s.to_string()).collect();

        // Answered at once (every source cached) or within `WHOLE_WITHIN`: one record, written
        // with its outcome. Otherwise some source is still being waited for: write the access
        // record (who, whose, why, which view and sections) now, concurrently, and attach the
        // outcome afterwards. The answer waits for both, so no data leaves without the durable
        // record, but the fsync does not come after a slow source.
        let ((outcomes, upstream_wait), audited) = {
            let calls = needed
                .iter()
                .map(|adapter| self.call(adapter, &req, started, deadline));
            let mut fanout = std::pin::pin!(async {
                let outcomes: Vec<Outcome> = join_all(calls).await;
                (outcomes, started.elapsed())
            });
            let quick = match futures::poll!(fanout.as_mut()) {
                std::task::Poll::Ready(done) => Some(done),
                std::task::Poll::Pending => tokio::time::timeout(WHOLE_WITHIN, fanout.as_mut())
                    .await
                    .ok(),
            };
            match quick {
                Some(done) => (done, Audited::Whole(Box::new(record))),
                None => {
                    // The record itself goes to the store now; only its outcome is left.
                    let mut intent = record;
                    intent.outcome = "requested".into();
                    intent.sources = needed
                        .iter()
                        .map(|a| (a.client.id().clone(), "requested".into()))
                        .collect();
                    let (done, begun) = futures::join!(fanout, self.audit.begin(intent));
                    (done, Audited::Begun(begun?))
                }
            }
        };

        let answers: Vec<&SourceAnswer> = outcomes
            .iter()
            .filter_map(|o| o.answer.as_deref())
            .collect();
        let complete = outcomes.iter().all(|o| o.answer.is_some());
        let mut sources: Vec<SourceReport> = outcomes.iter().map(|o| o.report.clone()).collect();
        for a in &plan.skipped {
            sources.push(SourceReport {
                adapter: a.client.id().clone(),
                organisation: a.client.organisation().clone(),
                status: "skipped",
                latency_ms: 0,
                age_ms: None,
                fetched_at: None,
                error: None,
            });
        }
        let record_sources: Vec<(Arc<str>, std::borrow::Cow<'static, str>)> = outcomes
            .iter()
            .map(|o| (o.report.adapter.clone(), o.report.status.into()))
            .collect();

        if answers.is_empty() && !needed.is_empty() {
            let all_timeouts = outcomes.iter().all(|o| o.timed_out);
            let err = if all_timeouts {
                DossierError::AllTimedOut
            } else {
                DossierError::NoSource(
                    outcomes
                        .iter()
                        .map(|o| {
                            format!(
                                "{}: {}",
                                o.report.adapter,
                                o.report.error.as_deref().unwrap_or(o.report.status)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            };
            // Even a failed access is an access attempt: audit it, fail closed.
            let done = Completion {
                time: Utc::now(),
                outcome: format!("failed: {err}"),
                sources: record_sources,
            };
            self.finish(audited, done).await?;
            return Err(err);
        }

        let rendered = self.render(rt, &req, &wanted, view, &answers).await;
        // The dossier is made now; its record's outcome bears the same time (one reading).
        let generated_at = Utc::now();
        let done = Completion {
            time: generated_at,
            outcome: if complete { "served" } else { "partial" }.into(),
            sources: record_sources,
        };
        self.finish(audited, done).await?;

        Ok(DossierResponse {
            subject: Subject { bsn: req.bsn },
            view: req.view,
            purpose: req.purpose,
            complete,
            generated_at,
            rendered,
            own_sections: Map::new(),
            sources,
            trace_id: req.trace.trace_id,
            upstream_wait,
        })
    }

    /// Records the access with its outcome `done`: the whole record, durable before the
    /// answer; or, when the record was written during the fan-out, its outcome (not waited
    /// for).
    async fn finish(&self, audited: Audited, done: Completion) -> Result<(), AuditError> {
        match audited {
            Audited::Whole(mut record) => {
                done.apply(&mut record);
                self.audit.record(*record).await
            }
            Audited::Begun(begun) => {
                self.audit.complete(begun, &done);
                Ok(())
            }
        }
    }

    /// Merge and view filter, or the same rendering from the render cache.
    async fn render(
        &self,
        rt: &Runtime,
        req: &DossierRequest,
        wanted: &BTreeSet<&str>,
        view: &ViewDef,
        answers: &[&SourceAnswer],
    ) -> Arc<Rendered> {
        let make = || {
            Arc::new(Rendered::render(
                &rt.config.gateway.sections,
                &rt.catalogue.vocab.decimals,
                wanted,
                answers,
                view,
            ))
        };
        let Some(cache) = &rt.renders.cache else {
            return make();
        };
        let key = RenderKey {
            view: req.view.clone(),
            sections: req
                .sections
                .as_ref()
                .map(|_| wanted.iter().map(|s| s.to_string()).collect()),
            bsn: req.bsn,
            answers: answers
                .iter()
                .map(|a| (a.adapter.clone(), a.fetched_at))
                .collect(),
        };
        if let Some(hit) = cache.get(&key).await {
            return hit;
        }
        let rendered = make();
        cache.insert(key, rendered.clone()).await;
        rendered
    }

    async fn call(
        &self,
        adapter: &AdapterRuntime,
        req: &DossierRequest,
        start: Instant,
        deadline: Instant,
    ) -> Outcome {
        // `start` is the fan-out's (one clock read for all its calls): a hit's age is counted
        // from it, and a hit takes no time worth a reading of its own (latency 0 ms).
        let client = &adapter.client;
        let spec = &client.spec;
        let key = CacheKey {
            adapter: client.id().clone(),
            version: adapter.cache_version.clone(),
            bsn: req.bsn,
        };
        let policy = Policy {
            ttl: spec.def.cache.ttl.0,
            stale_if_error: spec.def.cache.stale_if_error.0,
        };
        // Built only when the source is really called: a cache hit (or a request joining a
        // call in flight) needs no child span, no `traceparent` and no copy of the stack.
        let call = |deadline| {
            let call = Call {
                ctx: CallContext {
                    bsn: req.bsn,
                    traceparent: Some(req.trace.child().header()),
                },
                deadline,
                read: true,
            };
            adapter.stack.clone().oneshot(call)
        };
        // The outer bound covers waiting for a permit or for a call shared with other
        // requests: nothing waits past its own deadline (and giving up never cancels a shared
        // call).
        let remaining = deadline.saturating_duration_since(start);
        // A hit first, with nothing else in this future's state: the five call futures of a
        // cached dossier were 1.4 KiB each (7 KiB per read), most of it the miss's timer,
        // flight and stale lookup. The rest is boxed, and looks once more (an answer may have
        // come meanwhile).
        let (result, latency_ms) = match self.cache.hit(&key, policy, req.no_cache, start).await {
            Some(hit) => (Ok(hit), 0),
            None => {
                let result = Box::pin(async {
                    match tokio::time::timeout(
                        remaining,
                        self.cache
                            .get_or_fetch(key.clone(), policy, req.no_cache, deadline, call),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => match self.cache.stale_answer(&key, policy).await {
                            Some(hit) => Ok(hit),
                            None => Err(SourceError::Timeout(remaining.as_millis() as u64)),
                        },
                    }
                })
                .await;
                (result, start.elapsed().as_millis() as u64)
            }
        };
        let outcome = match result {
            Ok((answer, fresh)) => {
                let (status, age, lookup) = match fresh {
                    Freshness::Fetched => ("ok", None, "miss"),
                    Freshness::Joined => ("ok", None, "joined"),
                    Freshness::Cached(age) => ("cached", Some(age.as_millis() as u64), "hit"),
                    Freshness::Stale(age) => ("stale", Some(age.as_millis() as u64), "stale"),
                };
                adapter.series.cache_lookup(lookup);
                Outcome {
                    report: SourceReport {
                        adapter: client.id().clone(),
                        organisation: client.organisation().clone(),
                        status,
                        latency_ms,
                        age_ms: age,
                        fetched_at: Some(answer.fetched_at),
                        error: None,
                    },
                    answer: Some(answer),
                    timed_out: false,
                }
            }
            Err(e) => {
                // One line per adapter per interval, whatever the request rate: during an
                // outage at 6k req/s this was 50 MB of log in 20 s. The metrics count each.
                if let Some(suppressed) = adapter.failure_log.admit() {
                    tracing::warn!(
                        adapter = %client.id(),
                        status = e.status(),
                        error = %e,
                        trace_id = %req.trace.trace_id,
                        suppressed,
                        interval_s = crate::lograte::INTERVAL.as_secs(),
                        "Source failed (`suppressed` more such failures of this source since the last line)."
                    );
                }
                Outcome {
                    report: SourceReport {
                        adapter: client.id().clone(),
                        organisation: client.organisation().clone(),
                        status: e.status(),
                        latency_ms,
                        age_ms: None,
                        fetched_at: None,
                        error: Some(e.to_string()),
                    },
                    answer: None,
                    timed_out: matches!(e, SourceError::Timeout(_)),
                }
            }
        };
        adapter.series.source_result(outcome.report.status);
        *adapter.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastStatus {
            status: outcome.report.status,
            latency_ms: outcome.report.latency_ms,
            // The request's start plus the source's latency: no clock read per source.
            at: req.started_at + chrono::Duration::milliseconds(latency_ms as i64),
            error: outcome.report.error.clone(),
        });
        outcome
    }

    /// Runs one adapter alone for `bsn` (partner onboarding, `adapter test`), bypassing the
    /// cache.
    pub async fn run_adapter(
        client: &AdapterClient,
        bsn: Bsn,
    ) -> (Result<SourceAnswer, SourceError>, Duration) {
        let start = Instant::now();
        let ctx = CallContext {
            bsn,
            traceparent: Some(TraceContext::new_root().header()),
        };
        let r = match tokio::time::timeout(client.timeout(), client.fetch(&ctx)).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(client.timeout().as_millis() as u64)),
        };
        (r, start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dossier::{Conflict, Rendered};
    use serde_json::json;

    fn report(adapter: &str, status: &'static str) -> SourceReport {
        SourceReport {
            adapter: Arc::from(adapter),
            organisation: Arc::from("UWV"),
            status,
            latency_ms: 0,
            age_ms: None,
            fetched_at: None,
            error: None,
        }
    }

    #[test]
    fn a_dossier_answer_written_by_hand_is_byte_for_byte_its_serde_form() {
        let fetched = DateTime::from_timestamp(1_764_355_219, 120_000_000).unwrap_or_default();
        let mut sections = Map::new();
        sections.insert(
            "uitkeringen".into(),
            json!([{"soort": "WW", "bedrag": "1.234,56"}]),
        );
        sections.insert("persoon".into(), json!({"naam": "J. \"Jan\" de Vries"}));
        let conflict = Conflict {
            section: "persoon".into(),
            field: "naam".into(),
            key: None,
            values: vec![
                (Arc::from("brp"), json!("Jan")),
                (Arc::from("uwv"), json!("J.")),
            ],
        };
        let mut own = Map::new();
        own.insert(
            "zaken".into(),
            json!([{"id": "a/1", "status": "ontvangen"}]),
        );
        let sources = vec![
            SourceReport {
                latency_ms: 12,
                fetched_at: Some(fetched),
                ..report("uwv-uitkeringen", "ok")
            },
            SourceReport {
                age_ms: Some(81_234),
                fetched_at: Some(fetched + Duration::from_nanos(7)),
                ..report("brp-personen", "cached")
            },
            SourceReport {
                latency_ms: 2_000,
                error: Some("timeout after 2000 ms: \"slow\"\n\\".into()),
                ..report("svb\tregelingen", "failed")
            },
        ];
        for (purpose, complete, sources, conflicts, own) in [
            (
                None,
                true,
                sources.clone(),
                vec![conflict.clone()],
                own.clone(),
            ),
            (
                Some("Aanvraag WW \"spoed\"".to_string()),
                false,
                sources,
                vec![],
                Map::new(),
            ),
            (None, true, vec![], vec![], Map::new()),
        ] {
            let resp = DossierResponse {
                subject: Subject {
                    bsn: crate::bsn::Bsn::parse("999993653").unwrap(),
                },
                view: "klant".into(),
                purpose,
                complete,
                generated_at: fetched + Duration::from_millis(3),
                rendered: Arc::new(Rendered::new(sections.clone(), conflicts)),
                own_sections: own,
                sources,
                trace_id: "d26a93d7e6a9d3df1d1de95851c41c3c".into(),
                upstream_wait: Duration::ZERO,
            };
            let by_hand = resp.to_json();
            assert_eq!(
                String::from_utf8(by_hand.clone()).unwrap(),
                serde_json::to_string(&resp).unwrap()
            );
            // And it is JSON a client reads back.
            let v: Value = serde_json::from_slice(&by_hand).unwrap();
            assert_eq!(v["subject"]["bsn"], "999993653");
        }
    }
}
