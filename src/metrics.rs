//! Prometheus metrics, per gateway instance (no global registry, so tests stay isolated).
//!
//! Label values are bounded: adapter ids come from config, statuses and routes are fixed sets.
//! A BSN or any other request value never becomes a label.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::adapter::SourceError;

// Label values are shared (`Arc<str>` adapter ids from config) or static: looking a series up
// on the request path allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabel {
    pub adapter: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterStatus {
    pub adapter: Arc<str>,
    pub status: &'static str,
}

/// One operation on the shared cache (`cache.shared`) and how it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SharedLabel {
    /// `read`, `write`, `delete` or `ping`.
    pub op: &'static str,
    /// `hit`, `stale`, `miss`, `invalid` (a value that did not open), `ok`, `error`, `timeout`
    /// or `skipped` (Redis failed within the last second, or is not connected).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
    pub code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn overhead_histogram() -> Histogram {
    // 10 µs .. ~20 ms: the gateway's own work is small; resolve it finely.
    Histogram::new(exponential_buckets(0.00001, 2.0, 12))
}

pub struct Metrics {
    registry: Registry,
    attempt_seconds: HistogramFamily<AdapterLabel>,
    attempt_errors: Family<AdapterStatus, Counter>,
    source_results: Family<AdapterStatus, Counter>,
    cache_lookups: Family<AdapterStatus, Counter>,
    cache_shared: Family<SharedLabel, Counter>,
    pub circuit_state: Family<AdapterLabel, Gauge>,
    /// Adapters forgotten ([`Metrics::forget_adapter`]) and not built again: a call of theirs
    /// still in flight when they went must not bring their series back.
    retired: Retired,
    request_seconds: HistogramFamily<RouteLabel>,
    overhead_seconds: HistogramFamily<RouteLabel>,
    /// The two histograms of each route in [`ROUTES`] and status class, kept after the first
    /// lookup (as [`AdapterSeries`] keeps its counters): a label lookup hashes the label under
    /// the family's lock, twice per dossier request.
    route_slots: [[OnceLock<(Histogram, Histogram)>; CODES.len()]; ROUTES.len()],
    pub cache_bytes: Gauge,
    pub cache_entries: Gauge,
    pub inflight_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ketenportaal");
        let m = Metrics {
            attempt_seconds: Family::new_with_constructor(latency_histogram),
            attempt_errors: Family::default(),
            source_results: Family::default(),
            cache_lookups: Family::default(),
            cache_shared: Family::default(),
            circuit_state: Family::default(),
            retired: Retired::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            overhead_seconds: Family::new_with_constructor(overhead_histogram),
            route_slots: Default::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            inflight_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "source_call_duration_seconds",
            "Latency of each call (attempt) to a source",
            m.attempt_seconds.clone(),
        );
        registry.register(
            "source_call_errors",
            "Failed calls (attempts) to a source, by kind",
            m.attempt_errors.clone(),
        );
        registry.register(
            "source_results",
            "Source outcomes per dossier request: ok, cached, stale, timeout, error, unavailable",
            m.source_results.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups per adapter: hit, miss (a call made), joined (waited for another request's call), stale",
            m.cache_lookups.clone(),
        );
        registry.register(
            "cache_shared",
            "Shared cache (Redis) operations: op read|write|delete|ping; result hit, stale, miss, invalid (did not open), ok, error, timeout, skipped",
            m.cache_shared.clone(),
        );
        registry.register(
            "circuit_state",
            "Circuit breaker state per adapter: 0 closed, 1 half-open, 2 open",
            m.circuit_state.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Gateway request latency, by route and status class",
            m.request_seconds.clone(),
        );
        registry.register(
            "gateway_overhead_seconds",
            "Gateway time per request excluding the wait for sources",
            m.overhead_seconds.clone(),
        );
        registry.register(
            "cache_bytes",
            "Weighted size of the source cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries in the source cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "inflight_response_bytes",
            "Bytes of source answers being read and mapped now (bounded by limits.max_inflight_response_bytes)",
            m.inflight_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn observe_attempt(&self, adapter: &Arc<str>, took: Duration, err: Option<&SourceError>) {
        if self.retired.holds(adapter) {
            return;
        }
        let l = AdapterLabel {
            adapter: adapter.clone(),
        };
        self.attempt_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if let Some(e) = err {
            let kind = error_kind(e);
            self.attempt_errors
                .get_or_create(&AdapterStatus {
                    adapter: adapter.clone(),
                    status: kind,
                })
                .inc();
        }
    }

    /// Removes every series of `adapter` (it is no longer configured or registered).
    pub fn forget_adapter(&self, adapter: &str) {
        let adapter: Arc<str> = Arc::from(adapter);
        self.retired.write().insert(adapter.clone());
        let one = AdapterLabel {
            adapter: adapter.clone(),
        };
        self.attempt_seconds.remove(&one);
        self.circuit_state.remove(&one);
        let each = |family: &Family<AdapterStatus, Counter>, statuses: &[&'static str]| {
            for status in statuses {
                family.remove(&AdapterStatus {
                    adapter: adapter.clone(),
                    status,
                });
            }
        };
        each(&self.attempt_errors, &ERROR_KINDS);
        each(&self.source_results, &RESULTS);
        each(&self.cache_lookups, &LOOKUPS);
    }

    /// The request-path counters of one adapter, each looked up on first use and kept.
    pub fn adapter_series(&self, adapter: &Arc<str>) -> AdapterSeries {
        // Built again (registered anew): its series may come back.
        if self.retired.holds(adapter) {
            self.retired.write().remove(adapter);
        }
        AdapterSeries {
            retired: self.retired.clone(),
            adapter: adapter.clone(),
            results: self.source_results.clone(),
            lookups: self.cache_lookups.clone(),
            result_slots: Default::default(),
            lookup_slots: Default::default(),
        }
    }

    /// Cache lookups of one adapter so far: (hits, misses, joined calls, stale answers served).
    pub fn cache_counts(&self, adapter: &Arc<str>) -> (u64, u64, u64, u64) {
        // Read only: a status page must not add empty series to `/metrics`.
        let get = |result: &'static str| {
            self.cache_lookups
                .get(&AdapterStatus {
                    adapter: adapter.clone(),
                    status: result,
                })
                .map_or(0, |c| c.get())
        };
        (get("hit"), get("miss"), get("joined"), get("stale"))
    }

    /// One shared-cache operation (`op`, `result`: see [`SharedLabel`]).
    pub fn shared(&self, op: &'static str, result: &'static str) {
        self.cache_shared
            .get_or_create(&SharedLabel { op, result })
            .inc();
    }

    /// Shared-cache operations so far of one kind (`op`), by result; read only, as
    /// [`Metrics::cache_counts`].
    pub fn shared_counts(
        &self,
        op: &'static str,
        results: &[&'static str],
    ) -> Vec<(&'static str, u64)> {
        results
            .iter()
            .map(|&result| {
                let n = self
                    .cache_shared
                    .get(&SharedLabel { op, result })
                    .map_or(0, |c| c.get());
                (result, n)
            })
            .collect()
    }

    pub fn request(&self, route: &'static str, status: u16, took: Duration, upstream: Duration) {
        let class = usize::from(status / 100).clamp(1, CODES.len()) - 1;
        let l = RouteLabel {
            route,
            code: CODES[class],
        };
        let own = took.saturating_sub(upstream).as_secs_f64();
        let look_up = || {
            (
                self.request_seconds.get_or_create(&l).clone(),
                self.overhead_seconds.get_or_create(&l).clone(),
            )
        };
        let looked_up;
        let (all, overhead) = match ROUTES.iter().position(|r| *r == route) {
            Some(i) => self.route_slots[i][class].get_or_init(look_up),
            None => {
                looked_up = look_up();
                &looked_up
            }
        };
        all.observe(took.as_secs_f64());
        overhead.observe(own);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Routes whose request series are kept after their first lookup (`route_slots`).
const ROUTES: [&str; 2] = ["/v1/me/dossier", "/v1/dossiers"];
/// Status classes, `1xx` to `5xx` (anything above 5xx counts as 5xx).
const CODES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Source outcomes counted per dossier request (`source_results`).
const RESULTS: [&str; 6] = ["ok", "cached", "stale", "timeout", "error", "unavailable"];
/// Failed attempts by kind (`source_call_errors_total`).
const ERROR_KINDS: [&str; 10] = [
    "timeout",
    "http",
    "fault",
    "mapping",
    "too_large",
    "over_budget",
    "transport",
    "tls",
    "unexpected_answer",
    "unavailable",
];

fn error_kind(e: &SourceError) -> &'static str {
    match e {
        SourceError::Timeout(_) => "timeout",
        SourceError::Http { .. } => "http",
        SourceError::Fault { .. } => "fault",
        SourceError::Map(_) => "mapping",
        SourceError::TooLarge(_) => "too_large",
        SourceError::OverBudget(_) | SourceError::OverShare { .. } => "over_budget",
        SourceError::Transport(_) => "transport",
        SourceError::Tls(_) => "tls",
        SourceError::Unexpected(_) => "unexpected_answer",
        SourceError::Unavailable => "unavailable",
    }
}
/// Cache lookup results (`cache_lookups`).
const LOOKUPS: [&str; 4] = ["hit", "miss", "joined", "stale"];

/// The ids of adapters whose series were removed, shared by the [`AdapterSeries`].
#[derive(Clone, Debug, Default)]
struct Retired(Arc<std::sync::RwLock<std::collections::HashSet<Arc<str>>>>);

impl Retired {
    fn holds(&self, adapter: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(adapter)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, std::collections::HashSet<Arc<str>>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// One adapter's series on the dossier path. A label lookup hashes the adapter id under the
/// family's lock, and a dossier counts two per source; these keep the counter (a shared
/// handle) after the first lookup. A series still appears only once it has been counted.
pub struct AdapterSeries {
    retired: Retired,
    adapter: Arc<str>,
    results: Family<AdapterStatus, Counter>,
    lookups: Family<AdapterStatus, Counter>,
    result_slots: [OnceLock<Counter>; RESULTS.len()],
    lookup_slots: [OnceLock<Counter>; LOOKUPS.len()],
}

impl AdapterSeries {
    /// One source outcome of a dossier request: ok, cached, stale, timeout, error, unavailable.
    pub fn source_result(&self, status: &'static str) {
        self.count(&self.results, &self.result_slots, &RESULTS, status);
    }

    /// One cache lookup: hit, miss, joined or stale.
    pub fn cache_lookup(&self, result: &'static str) {
        self.count(&self.lookups, &self.lookup_slots, &LOOKUPS, result);
    }

    fn count(
        &self,
        family: &Family<AdapterStatus, Counter>,
        slots: &[OnceLock<Counter>],
        names: &[&str],
        status: &'static str,
    ) {
        let label = || AdapterStatus {
            adapter: self.adapter.clone(),
            status,
        };
        let slot = names.iter().position(|n| *n == status).map(|i| &slots[i]);
        // Once kept, a counter is counted without a look at the retired set (the cached
        // dossier's path); before, a retired adapter's series is not made again.
        if let Some(kept) = slot.and_then(OnceLock::get) {
            kept.inc();
            return;
        }
        if self.retired.holds(&self.adapter) {
            return;
        }
        match slot {
            Some(s) => {
                s.get_or_init(|| family.get_or_create(&label()).clone())
                    .inc();
            }
            None => {
                family.get_or_create(&label()).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_adapter_leaves_no_series_and_the_others_keep_theirs() {
        let m = Metrics::new();
        let (gone, kept): (Arc<str>, Arc<str>) = (Arc::from("p-weg"), Arc::from("uwv"));
        let errors = [
            SourceError::Timeout(1),
            SourceError::Http {
                status: 500,
                detail: None,
            },
            SourceError::Fault {
                code: "c".into(),
                reason: "r".into(),
            },
            SourceError::Map(crate::mapping::MapError::NoSoapBody),
            SourceError::TooLarge(1),
            SourceError::OverBudget(1),
            SourceError::Transport("t".into()),
            SourceError::Tls("t".into()),
            SourceError::Unexpected("u".into()),
            SourceError::Unavailable,
        ];
        for a in [&gone, &kept] {
            for e in &errors {
                assert!(ERROR_KINDS.contains(&error_kind(e)), "{e}");
                m.observe_attempt(a, Duration::from_millis(1), Some(e));
            }
            let series = m.adapter_series(a);
            RESULTS.iter().for_each(|r| series.source_result(r));
            LOOKUPS.iter().for_each(|l| series.cache_lookup(l));
            m.circuit_state
                .get_or_create(&AdapterLabel { adapter: a.clone() })
                .set(2);
        }
        let in_flight = m.adapter_series(&gone);
        m.forget_adapter("p-weg");
        // A call still in flight when it went ends after: nothing comes back.
        m.observe_attempt(&gone, Duration::from_millis(1), Some(&errors[0]));
        in_flight.source_result("ok");
        in_flight.cache_lookup("miss");
        let text = m.encode();
        assert!(!text.contains("p-weg"), "{text}");
        assert_eq!(
            text.matches(r#"adapter="uwv""#).count(),
            text.matches("adapter=").count()
        );
        assert!(
            text.contains(r#"ketenportaal_circuit_state{adapter="uwv"} 2"#),
            "{text}"
        );
        // Registered again: counted again.
        m.adapter_series(&gone).source_result("ok");
        assert!(m.encode().contains(r#"adapter="p-weg""#));
    }

    #[test]
    fn request_series_kept_after_their_first_lookup_count_into_the_exposition() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.request("/v1/me/dossier", 200, ms(3), ms(1));
        m.request("/v1/me/dossier", 200, ms(4), ms(4));
        m.request("/v1/me/dossier", 503, ms(2), ms(0));
        m.request("/v1/dossiers", 403, ms(1), ms(0));
        // A route without kept series is looked up each time.
        m.request("/v1/other", 201, ms(1), ms(0));
        m.request("/v1/other", 299, ms(1), ms(0));
        let text = m.encode();
        let count = |metric: &str, route: &str, code: &str| {
            let line = format!("ketenportaal_{metric}_count{{route=\"{route}\",code=\"{code}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("no {line} in\n{text}"))
                .to_string()
        };
        for metric in ["request_duration_seconds", "gateway_overhead_seconds"] {
            assert_eq!(count(metric, "/v1/me/dossier", "2xx"), "2");
            assert_eq!(count(metric, "/v1/me/dossier", "5xx"), "1");
            assert_eq!(count(metric, "/v1/dossiers", "4xx"), "1");
            assert_eq!(count(metric, "/v1/other", "2xx"), "2");
        }
        // The overhead is the time less the wait for sources: (3 - 1) + (4 - 4) ms for the 2xx pair.
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "ketenportaal_gateway_overhead_seconds_sum{route=\"/v1/me/dossier\",code=\"2xx\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert!(sum.is_some_and(|s| (s - 0.002).abs() < 1e-9), "{sum:?}");
    }
}
