//! The metrics layer on the public router: counts every response by route,
//! status, intent and problem code from the [`RequestOutcome`] the pipeline
//! attached, times the body until its first byte and its end, and keeps the
//! recent latencies and refusals the dashboard shows.
//!
//! Labels come only from the config (route scopes), the price table (model
//! ids), stable problem codes and fixed words. Never from headers, bodies or
//! anything a client chose freely.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::observe::RequestOutcome;

/// How many completed requests the latency percentiles are taken over.
const LATENCY_WINDOW: usize = 4096;
/// How many recent refusals the dashboard lists.
const REFUSAL_WINDOW: usize = 200;
/// The phases of `tollgate_phase_seconds`, in the order of
/// [`RouteMetrics::phases`].
const PHASES: [&str; 4] = ["payment", "upstream", "deliver", "overhead"];
/// Histogram buckets, seconds: 1 ms … 2 min.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// One gateway's metrics: its own Prometheus registry (not the process-wide
/// one, so several gateways in one process stay apart) and recent samples.
pub struct Observer {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    recent: Mutex<Recent>,
    routes: RwLock<HashMap<String, Arc<RouteMetrics>>>,
    /// Payment outcome counters by intent, then outcome.
    outcomes: RwLock<HashMap<&'static str, Arc<Handles<String, Counter>>>>,
}

/// Metric handles by label value, registered on first use.
type Handles<K, H> = RwLock<HashMap<K, H>>;

/// A route's metric handles, registered on its first request: a labelled
/// key built per request (its labels allocated and hashed, then looked up)
/// cost more than the recording itself.
struct RouteMetrics {
    route: Arc<str>,
    /// `tollgate_phase_seconds` by phase ([`PHASES`]), registered when
    /// first timed (a free route never shows a payment phase).
    phases: [OnceLock<Histogram>; 4],
    ttfb: Histogram,
    duration: Histogram,
    by_status: RwLock<HashMap<u16, Counter>>,
    problems: RwLock<HashMap<String, Counter>>,
}

/// The handle `map` holds for `key`, registered by `register` the first
/// time (the registry's key space is bounded: see the module's labels).
fn handle<K, Q, H>(
    map: &RwLock<HashMap<K, H>>,
    key: &Q,
    owned: impl FnOnce() -> K,
    register: impl FnOnce() -> H,
) -> H
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    H: Clone,
{
    if let Some(found) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return found.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(owned())
        .or_insert_with(register)
        .clone()
}

#[derive(Default)]
struct Recent {
    latencies: VecDeque<Latency>,
    refusals: VecDeque<Refusal>,
    refusals_by_code: BTreeMap<String, u64>,
}

/// A completed request's timings.
#[derive(Debug, Clone)]
pub struct Latency {
    pub route: Arc<str>,
    pub ttfb: Duration,
    pub total: Duration,
    pub upstream: Option<Duration>,
    pub overhead: Option<Duration>,
}

/// A problem response, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    /// Unix seconds.
    pub at: i64,
    pub route: Arc<str>,
    pub status: u16,
    pub code: String,
    pub intent: Option<&'static str>,
}

impl Observer {
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new();
        // Histograms, not summaries, so they aggregate across instances.
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let observer = Arc::new(Self {
            recorder,
            handle,
            recent: Mutex::new(Recent::default()),
            routes: RwLock::default(),
            outcomes: RwLock::default(),
        });
        spawn_upkeep(&observer);
        observer
    }

    /// Runs `f` with this gateway's registry as the `metrics` recorder.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    pub fn latencies(&self) -> Vec<Latency> {
        self.lock().latencies.iter().cloned().collect()
    }

    /// Most recent first, and the counts by code since start.
    pub fn refusals(&self) -> (Vec<Refusal>, BTreeMap<String, u64>) {
        let recent = self.lock();
        (
            recent.refusals.iter().rev().cloned().collect(),
            recent.refusals_by_code.clone(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handles of `route`'s metrics.
    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        handle(
            &self.routes,
            route,
            || route.to_owned(),
            || {
                self.with(|| {
                    Arc::new(RouteMetrics {
                        route: route.into(),
                        phases: Default::default(),
                        ttfb: histogram!("tollgate_time_to_first_byte_seconds", "route" => route.to_owned()),
                        duration: histogram!("tollgate_request_duration_seconds", "route" => route.to_owned()),
                        by_status: RwLock::default(),
                        problems: RwLock::default(),
                    })
                })
            },
        )
    }

    /// The `tollgate_payment_outcomes_total` counter of `intent` and
    /// `outcome`.
    fn outcome(&self, intent: &'static str, outcome: &str) -> Counter {
        let by_outcome = handle(&self.outcomes, intent, || intent, Arc::default);
        handle(
            &by_outcome,
            outcome,
            || outcome.to_owned(),
            || {
                self.with(|| {
                    counter!(
                        "tollgate_payment_outcomes_total",
                        "intent" => intent,
                        "outcome" => outcome.to_owned()
                    )
                })
            },
        )
    }

    fn on_response(
        &self,
        metrics: &RouteMetrics,
        status: u16,
        outcome: &RequestOutcome,
        to_headers: Duration,
    ) {
        let route = &metrics.route;
        let intent = outcome.intent.map(|i| i.as_str());
        handle(&metrics.by_status, &status, || status, || {
            self.with(|| {
                counter!("tollgate_requests_total", "route" => route.to_string(), "status" => status.to_string())
            })
        })
        .increment(1);
        if let Some(problem) = &outcome.problem {
            handle(&metrics.problems, problem.code.as_str(), || problem.code.clone(), || {
                self.with(|| {
                    counter!("tollgate_problems_total", "route" => route.to_string(), "code" => problem.code.clone())
                })
            })
            .increment(1);
        }
        let payment_outcome = match (&outcome.problem, outcome.paid) {
            (_, true) => Some("paid"),
            (Some(problem), false) if problem.payment => Some(problem.code.as_str()),
            _ => None,
        };
        if let Some(result) = payment_outcome {
            self.outcome(intent.unwrap_or("none"), result).increment(1);
        }
        let timings = outcome.timings;
        let durations = [
            timings.payment,
            timings.upstream,
            timings.deliver,
            overhead(outcome, to_headers),
        ];
        for ((histogram, phase), duration) in metrics.phases.iter().zip(PHASES).zip(durations) {
            if let Some(duration) = duration {
                histogram
                    .get_or_init(|| {
                        self.with(|| {
                            histogram!("tollgate_phase_seconds", "route" => route.to_string(), "phase" => phase)
                        })
                    })
                    .record(duration.as_secs_f64());
            }
        }
        if let Some(problem) = outcome.problem.as_ref().filter(|_| status >= 400) {
            let mut recent = self.lock();
            *recent
                .refusals_by_code
                .entry(problem.code.clone())
                .or_default() += 1;
            if recent.refusals.len() == REFUSAL_WINDOW {
                recent.refusals.pop_front();
            }
            recent.refusals.push_back(Refusal {
                at: time::OffsetDateTime::now_utc().unix_timestamp(),
                route: Arc::clone(route),
                status,
                code: problem.code.clone(),
                intent,
            });
        }
    }

    fn on_body_end(&self, metrics: &RouteMetrics, latency: Latency) {
        metrics.ttfb.record(latency.ttfb.as_secs_f64());
        metrics.duration.record(latency.total.as_secs_f64());
        let mut recent = self.lock();
        if recent.latencies.len() == LATENCY_WINDOW {
            recent.latencies.pop_front();
        }
        recent.latencies.push_back(latency);
    }
}

/// The gateway's own share of the time to the response headers outside
/// the payment, upstream and delivery steps: reading, pricing and checking
/// the request, routing, middleware.
fn overhead(outcome: &RequestOutcome, to_headers: Duration) -> Option<Duration> {
    let t = outcome.timings;
    let upstream = t.upstream?;
    Some(
        to_headers
            .saturating_sub(upstream)
            .saturating_sub(t.payment.unwrap_or_default())
            .saturating_sub(t.deliver.unwrap_or_default()),
    )
}

/// Histogram samples are drained into their buckets periodically, so memory
/// stays bounded between scrapes.
fn spawn_upkeep(observer: &Arc<Observer>) {
    let weak = Arc::downgrade(observer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let Some(observer) = weak.upgrade() else {
                return;
            };
            observer.handle.run_upkeep();
        }
    });
}

/// The middleware: `axum::middleware::from_fn_with_state(observer, record)`.
pub async fn record(
    State(observer): State<Arc<Observer>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let to_headers = started.elapsed();
    let outcome = response
        .extensions_mut()
        .remove::<RequestOutcome>()
        .unwrap_or_default();
    // Unknown paths share one label: clients must not mint label values.
    let metrics = match (&outcome.route, matched) {
        (Some(route), _) => observer.route(route),
        (None, Some(path)) => observer.route(&format!("{method} {}", path.as_str())),
        (None, None) => observer.route("unmatched"),
    };
    observer.on_response(&metrics, response.status().as_u16(), &outcome, to_headers);
    let upstream = outcome.timings.upstream;
    let overhead = overhead(&outcome, to_headers);
    response.map(|inner| {
        Body::new(ObservedBody {
            inner,
            observer,
            metrics,
            started,
            first_byte: None,
            upstream,
            overhead,
        })
    })
}

/// Passes a body through, noting when its first byte went out and when it
/// ended (or was dropped: the client went away).
struct ObservedBody {
    inner: Body,
    observer: Arc<Observer>,
    metrics: Arc<RouteMetrics>,
    started: Instant,
    first_byte: Option<Duration>,
    upstream: Option<Duration>,
    overhead: Option<Duration>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_data()
            && self.first_byte.is_none()
        {
            self.first_byte = Some(self.started.elapsed());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        self.observer.on_body_end(
            &self.metrics,
            Latency {
                route: Arc::clone(&self.metrics.route),
                ttfb: self.first_byte.unwrap_or(total),
                total,
                upstream: self.upstream,
                overhead: self.overhead,
            },
        );
    }
}
