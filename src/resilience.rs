//! Per-adapter resilience as a tower stack, built once per adapter when the config loads:
//!
//! ```text
//! call ─▶ Breaker ─▶ ConcurrencyLimit ─▶ Retry (reads only, budget) ─▶ AttemptTimeout ─▶ fetch
//! ```
//!
//! - The **breaker** sits outermost: while open it refuses at once, costing nothing.
//! - The **concurrency limit** comes next, so retries count against it too: a struggling
//!   source never sees more than `max_concurrency` calls from us.
//! - **Retry** only repeats reads, only for transient failures, only while the request deadline
//!   leaves room, and only while the retry budget (a share of recent calls) allows.
//! - **AttemptTimeout** gives each attempt what remains of the deadline, capped at the adapter's
//!   timeout. A call shared by several requests (see [`crate::cache`]) has the latest of their
//!   deadlines, moved out as requests join it ([`Deadline`]).
//!
//! The stack is a `Clone` service (no `Buffer` on the hot path).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand_core::RngCore;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use crate::adapter::{AdapterClient, CallContext, SourceAnswer, SourceError};
use crate::metrics::Metrics;
use crate::model::{CircuitDef, Resilience};

/// When a call must be over. Clones share it: a call made for several requests ends at the
/// latest of their deadlines, and a request that joins it moves it out with [`Deadline::extend`]
/// (never in).
#[derive(Debug, Clone)]
pub struct Deadline(Arc<Moving>);

#[derive(Debug)]
struct Moving {
    first: Instant,
    /// How far past `first` it has been moved, in nanoseconds.
    moved: AtomicU64,
}

impl Deadline {
    pub fn at(when: Instant) -> Deadline {
        Deadline(Arc::new(Moving {
            first: when,
            moved: AtomicU64::new(0),
        }))
    }

    /// The deadline now.
    pub fn instant(&self) -> Instant {
        self.0.first + Duration::from_nanos(self.0.moved.load(Ordering::Acquire))
    }

    pub fn remaining(&self) -> Duration {
        self.instant().saturating_duration_since(Instant::now())
    }

    /// Moves the deadline out to `when`, if that is later.
    pub fn extend(&self, when: Instant) {
        let by = when.saturating_duration_since(self.0.first).as_nanos();
        self.0
            .moved
            .fetch_max(u64::try_from(by).unwrap_or(u64::MAX), Ordering::AcqRel);
    }

    /// Resolves once the deadline has passed, following it when it moves.
    pub async fn passed(&self) {
        loop {
            let at = self.instant();
            tokio::time::sleep_until(at.into()).await;
            if self.instant() <= at {
                return;
            }
        }
    }
}

impl From<Instant> for Deadline {
    fn from(when: Instant) -> Deadline {
        Deadline::at(when)
    }
}

/// One call through an adapter stack.
#[derive(Debug, Clone)]
pub struct Call {
    pub ctx: CallContext,
    /// No attempt runs past this.
    pub deadline: Deadline,
    /// Reads may be retried; writes (deliveries) never are, here.
    pub read: bool,
}

pub type Stack = BoxCloneSyncService<Call, SourceAnswer, SourceError>;

/// Whether a failure says something about the source's health (and may be retried).
fn is_source_failure(e: &SourceError) -> bool {
    match e {
        SourceError::Timeout(_)
        | SourceError::Transport(_)
        | SourceError::Tls(_)
        | SourceError::Unexpected(_)
        | SourceError::Map(_)
        | SourceError::TooLarge(_) => true,
        // A redirect is not followed: the source is misconfigured or moved, and every call
        // fails the same way until someone fixes it, as with a 5xx.
        SourceError::Http { status, .. } => *status >= 500 || (300..400).contains(status),
        SourceError::Fault { code, .. } => {
            let local = code.rsplit(':').next().unwrap_or(code);
            !(local.eq_ignore_ascii_case("Client") || local.eq_ignore_ascii_case("Sender"))
        }
        SourceError::Unavailable | SourceError::OverBudget(_) | SourceError::OverShare { .. } => {
            false
        }
    }
}

/// Failures worth another attempt: the connection broke, or a proxy in front of the source
/// said it is briefly unavailable. A timeout is not retried: the source is slow, and asking
/// again would only add load and use the rest of the deadline. A TLS refusal is not
/// retried either: it fails the same way every time.
fn is_transient(e: &SourceError) -> bool {
    match e {
        SourceError::Transport(_) => true,
        SourceError::Http { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

// ----------------------------------------------------------------------------------------------
// Circuit breaker
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct BreakerInner {
    state: CircuitState,
    consecutive: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    /// Outcomes in the window, counted per tenth of it.
    window: Window,
}

/// Slices of the error-rate window.
const SLICES: usize = 10;

/// A sliding window of call outcomes kept as counts per slice (a tenth of the window), so
/// recording is O(1) and the memory is fixed whatever the call rate; the window moves one
/// slice at a time (as resilience4j's time-based window does per second).
#[derive(Debug)]
struct Window {
    origin: Instant,
    slice: Duration,
    /// `(slice number since origin, calls, failures)`; a slot whose number is older than the
    /// window counts as empty.
    slots: [(u64, u32, u32); SLICES],
}

impl Window {
    fn new(length: Duration) -> Window {
        Window {
            origin: Instant::now(),
            slice: (length / SLICES as u32).max(Duration::from_millis(1)),
            slots: [(0, 0, 0); SLICES],
        }
    }

    fn number(&self, now: Instant) -> u64 {
        let n = now.duration_since(self.origin).as_nanos() / self.slice.as_nanos().max(1);
        // Numbers start at 1, so a fresh slot (0) is never taken for a live one.
        u64::try_from(n).unwrap_or(u64::MAX - 1) + 1
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let n = self.number(now);
        let slot = &mut self.slots[(n % SLICES as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        slot.2 = slot.2.saturating_add(u32::from(failed));
    }

    /// `(calls, failures)` within the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let n = self.number(now);
        self.slots
            .iter()
            .filter(|(k, _, _)| *k != 0 && n - k < SLICES as u64)
            .fold((0u32, 0u32), |(c, f), (_, sc, sf)| {
                (c.saturating_add(*sc), f.saturating_add(*sf))
            })
    }

    fn clear(&mut self) {
        self.slots = [(0, 0, 0); SLICES];
    }
}

/// A circuit breaker for one adapter; shared by every clone of its stack.
#[derive(Debug)]
pub struct Breaker {
    cfg: CircuitDef,
    inner: Mutex<BreakerInner>,
}

impl Breaker {
    pub fn new(cfg: CircuitDef) -> Self {
        let window = Window::new(cfg.window.0);
        Breaker {
            cfg,
            inner: Mutex::new(BreakerInner {
                state: CircuitState::Closed,
                consecutive: 0,
                opened_at: None,
                probe_in_flight: false,
                window,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        // A poisoned lock only means a panic elsewhere mid-update; the state is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> CircuitState {
        let mut g = self.lock();
        self.advance(&mut g, Instant::now());
        g.state
    }

    fn advance(&self, g: &mut BreakerInner, now: Instant) {
        if g.state == CircuitState::Open
            && g.opened_at
                .is_some_and(|t| now.duration_since(t) >= self.cfg.open_for.0)
        {
            g.state = CircuitState::HalfOpen;
            g.probe_in_flight = false;
        }
    }

    /// May a call go through now? In half-open, only one probe at a time.
    fn admit(&self) -> bool {
        if !self.cfg.enabled {
            return true;
        }
        let mut g = self.lock();
        self.advance(&mut g, Instant::now());
        match g.state {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen if g.probe_in_flight => false,
            CircuitState::HalfOpen => {
                g.probe_in_flight = true;
                true
            }
        }
    }

    /// A call that was given up by its caller: not an outcome. Only a half-open probe needs
    /// settling, so that the next call can probe.
    fn abandon(&self) {
        let mut g = self.lock();
        if g.state == CircuitState::HalfOpen {
            g.probe_in_flight = false;
        }
    }

    fn record(&self, failed: bool) {
        if !self.cfg.enabled {
            return;
        }
        let now = Instant::now();
        let mut g = self.lock();
        match g.state {
            CircuitState::HalfOpen => {
                g.probe_in_flight = false;
                if failed {
                    g.state = CircuitState::Open;
                    g.opened_at = Some(now);
                } else {
                    g.state = CircuitState::Closed;
                    g.consecutive = 0;
                    g.window.clear();
                }
                return;
            }
            CircuitState::Open => return,
            CircuitState::Closed => {}
        }
        g.consecutive = if failed { g.consecutive + 1 } else { 0 };
        g.window.record(now, failed);
        let (calls, failures) = g.window.totals(now);
        let rate_trips = calls >= self.cfg.min_calls.max(1)
            && failures * 100 >= self.cfg.error_rate_percent * calls;
        if failed && (g.consecutive >= self.cfg.consecutive_failures.max(1) || rate_trips) {
            g.state = CircuitState::Open;
            g.opened_at = Some(now);
            g.window.clear();
        }
    }
}

/// Settles an admitted call that was dropped before it finished. Dropped at or after its
/// deadline, the source was too slow: a failure. Dropped earlier, the caller went away (the
/// portal user closed the page, a load balancer gave up): that says nothing about the source,
/// so nothing is counted, but a half-open probe slot is given back so the breaker is not stuck.
struct Admitted {
    breaker: Arc<Breaker>,
    deadline: Deadline,
    done: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if Instant::now() >= self.deadline.instant() {
            self.breaker.record(true);
        } else {
            self.breaker.abandon();
        }
    }
}

#[derive(Clone)]
pub struct BreakerLayer(pub Arc<Breaker>);

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            breaker: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct BreakerService<S> {
    breaker: Arc<Breaker>,
    inner: S,
}

impl<S> Service<Call> for BreakerService<S>
where
    S: Service<Call, Response = SourceAnswer, Error = SourceError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = SourceAnswer;
    type Error = SourceError;
    type Future = BoxFuture<'static, Result<SourceAnswer, SourceError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        // Readiness of the inner stack (the concurrency limit) is awaited per call below, so
        // an open breaker refuses without waiting for a permit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let breaker = self.breaker.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            if !breaker.admit() {
                return Err(SourceError::Unavailable);
            }
            let mut guard = Admitted {
                breaker: breaker.clone(),
                deadline: call.deadline.clone(),
                done: false,
            };
            let r = inner.oneshot(call).await;
            guard.done = true;
            match &r {
                // Refused by our own budget: says nothing about the source, either way.
                Err(SourceError::OverBudget(_) | SourceError::OverShare { .. }) => {
                    breaker.abandon()
                }
                _ => breaker.record(r.as_ref().err().is_some_and(is_source_failure)),
            }
            r
        })
    }
}

// ----------------------------------------------------------------------------------------------
// Retry
// ----------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct ReadRetry {
    budget: Arc<TpsBudget>,
    left: u32,
    backoff: Duration,
}

impl ReadRetry {
    pub fn new(cfg: &Resilience) -> Self {
        ReadRetry {
            // Deposits live 10 s; at least 2 retries per second are always allowed.
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                2,
                cfg.retry_budget_percent as f32 / 100.0,
            )),
            left: cfg.retries,
            backoff: cfg.retry_backoff.0,
        }
    }
}

impl tower::retry::Policy<Call, SourceAnswer, SourceError> for ReadRetry {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<SourceAnswer, SourceError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(e) => {
                if !call.read || self.left == 0 || !is_transient(e) {
                    return None;
                }
                let mut jitter = [0u8; 2];
                rand_core::OsRng.fill_bytes(&mut jitter);
                let wait = self.backoff
                    + Duration::from_micros(u64::from(u16::from_le_bytes(jitter)) % 10_000);
                // Only retry when the attempt after the wait still has a useful slice of time.
                let remaining = call.deadline.remaining();
                if remaining < wait + Duration::from_millis(50) || !self.budget.withdraw() {
                    return None;
                }
                self.left -= 1;
                self.backoff *= 2;
                Some(Box::pin(tokio::time::sleep(wait)))
            }
        }
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        call.read.then(|| call.clone())
    }
}

// ----------------------------------------------------------------------------------------------
// Attempt timeout and the fetch service
// ----------------------------------------------------------------------------------------------

/// Calls the adapter once, bounded by the remaining deadline and the adapter's timeout, and
/// records the attempt's latency.
#[derive(Clone)]
pub struct FetchService {
    client: AdapterClient,
    metrics: Arc<Metrics>,
}

impl Service<Call> for FetchService {
    type Response = SourceAnswer;
    type Error = SourceError;
    type Future = BoxFuture<'static, Result<SourceAnswer, SourceError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let timeout = client.timeout();
            let started = Instant::now();
            // The deadline is followed while the attempt runs: it moves out when another
            // request joins a shared call.
            let r = tokio::select! {
                r = client.fetch(&call.ctx) => r,
                () = tokio::time::sleep(timeout) => Err(SourceError::Timeout(timeout.as_millis() as u64)),
                () = call.deadline.passed() => Err(SourceError::Timeout(started.elapsed().as_millis() as u64)),
            };
            metrics.observe_attempt(client.id(), started.elapsed(), r.as_ref().err());
            r
        })
    }
}

/// Builds the stack for one adapter.
pub fn build(client: AdapterClient, breaker: Arc<Breaker>, metrics: Arc<Metrics>) -> Stack {
    let cfg = client.spec.def.resilience.clone();
    let stack = ServiceBuilder::new()
        .layer(BreakerLayer(breaker))
        .concurrency_limit(cfg.max_concurrency.max(1) as usize)
        .layer(tower::retry::RetryLayer::new(ReadRetry::new(&cfg)))
        .service(FetchService { client, metrics })
        .map_err(|e: SourceError| e);
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dur;

    fn cfg() -> CircuitDef {
        CircuitDef {
            enabled: true,
            consecutive_failures: 3,
            error_rate_percent: 50,
            min_calls: 10,
            window: Dur(Duration::from_secs(30)),
            open_for: Dur(Duration::from_millis(50)),
        }
    }

    #[tokio::test]
    async fn callers_that_hang_up_do_not_open_the_circuit_but_a_passed_deadline_does() {
        let breaker = Arc::new(Breaker::new(cfg()));
        let hangs = tower::service_fn(|_: Call| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err::<SourceAnswer, _>(SourceError::Unavailable)
        });
        let mut svc = BreakerLayer(breaker.clone()).layer(hangs);
        let call = |deadline: Instant| Call {
            ctx: CallContext {
                bsn: crate::bsn::Bsn::parse("999993653").unwrap(),
                traceparent: None,
            },
            deadline: deadline.into(),
            read: true,
        };
        // Ten callers give up long before the deadline: nothing is counted.
        for _ in 0..10 {
            let far = Instant::now() + Duration::from_secs(30);
            let r = tokio::time::timeout(Duration::from_millis(5), svc.call(call(far))).await;
            assert!(r.is_err(), "the call was given up");
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        // Given up at their deadline, the source was too slow: three in a row open it.
        for _ in 0..3 {
            let near = Instant::now() + Duration::from_millis(5);
            let _ = tokio::time::timeout(Duration::from_millis(10), svc.call(call(near))).await;
        }
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn a_shared_deadline_moves_out_never_in() {
        let t = Instant::now();
        let d = Deadline::at(t + Duration::from_secs(1));
        let joined = d.clone();
        joined.extend(t + Duration::from_secs(3));
        assert_eq!(d.instant(), t + Duration::from_secs(3));
        d.extend(t + Duration::from_secs(2));
        d.extend(t);
        assert_eq!(joined.instant(), t + Duration::from_secs(3));
    }

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_half_open() {
        let b = Breaker::new(cfg());
        for _ in 0..2 {
            assert!(b.admit());
            b.record(true);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.admit());
        b.record(true);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.admit());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.admit(), "one probe");
        assert!(!b.admit(), "only one probe at a time");
        b.record(true);
        assert_eq!(b.state(), CircuitState::Open, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit());
        b.record(false);
        assert_eq!(b.state(), CircuitState::Closed, "a good probe closes");
    }

    #[test]
    fn the_window_forgets_outcomes_older_than_its_length() {
        let mut w = Window::new(Duration::from_secs(10));
        let t0 = w.origin;
        w.record(t0, true);
        w.record(t0 + Duration::from_secs(4), false);
        w.record(t0 + Duration::from_secs(9), true);
        assert_eq!(w.totals(t0 + Duration::from_secs(9)), (3, 2));
        // 10.5 s on, the first slice (0–1 s) has left the window; the others are still in.
        assert_eq!(w.totals(t0 + Duration::from_millis(10_500)), (2, 1));
        // A slot reused a whole window later starts from zero.
        w.record(t0 + Duration::from_millis(14_200), false);
        assert_eq!(w.totals(t0 + Duration::from_millis(14_200)), (2, 1));
        assert_eq!(w.totals(t0 + Duration::from_secs(60)), (0, 0));
    }

    #[test]
    fn opens_on_error_rate_in_the_window() {
        let b = Breaker::new(cfg());
        // Alternating failures never reach 3 in a row, but 5 of 10 is 50 %.
        for i in 0..10 {
            assert!(b.admit(), "call {i}");
            b.record(i % 2 == 1);
        }
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn tls_refusals_and_redirects_count_but_are_not_retried() {
        let tls = SourceError::Tls(
            "the server refused our client certificate (certificate expired)".into(),
        );
        assert!(is_source_failure(&tls));
        assert!(!is_transient(&tls));
        let moved = SourceError::Http {
            status: 301,
            detail: None,
        };
        assert!(is_source_failure(&moved));
        assert!(!is_transient(&moved));
    }

    #[test]
    fn client_faults_do_not_count_against_the_source() {
        assert!(!is_source_failure(&SourceError::Fault {
            code: "soap:Client".into(),
            reason: "x".into()
        }));
        assert!(is_source_failure(&SourceError::Fault {
            code: "env:Receiver".into(),
            reason: "x".into()
        }));
        assert!(!is_source_failure(&SourceError::Http {
            status: 404,
            detail: None
        }));
        assert!(is_transient(&SourceError::Http {
            status: 503,
            detail: None
        }));
        assert!(!is_transient(&SourceError::Http {
            status: 500,
            detail: None
        }));
    }
}
