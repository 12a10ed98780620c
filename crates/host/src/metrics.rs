//! Prometheus metrics of one app, served on a listener of their own ([`crate::App::serve_metrics`],
//! `kiloclaw up --metrics-listen`), never on the app's port.
//!
//! What is counted where it happens in the host: inbound requests by route family and status with
//! a latency histogram, requests refused for want of an instance slot, outbound HTTP calls by
//! destination, operation and status (429s included) with latencies, key-value operations by
//! outcome (compare-and-swap conflicts apart), cron ticks, instance-slot and pool use. What only
//! the guests know — lifecycle steps, reconcile decisions, proxy recoveries — arrives as their
//! JSON log lines and is counted by `tag`, `action` and `outcome` (`kiloclaw_guest_events_total`).
//!
//! Label values must stay a small set: route families and outbound operations come from the
//! embedder's [`MetricLabels`] (the KiloClaw CLI names its routes and Fly's operations), never a
//! raw path, user id or machine id.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Names requests and outbound calls for metric labels; both answers must come from a small set.
pub trait MetricLabels: Send + Sync + std::fmt::Debug {
    /// The route family of an inbound request, or `None` to label it with its component.
    fn route_family(&self, method: &http::Method, path: &str) -> Option<&'static str>;
    /// The operation an outbound HTTP call performs, or `None` to label it `other`.
    fn outbound_operation(
        &self,
        method: &http::Method,
        host: &str,
        path: &str,
    ) -> Option<&'static str>;
}

/// Labels requests by component and outbound calls by destination only.
#[derive(Debug, Default, Clone, Copy)]
pub struct ComponentLabels;

impl MetricLabels for ComponentLabels {
    fn route_family(&self, _: &http::Method, _: &str) -> Option<&'static str> {
        None
    }
    fn outbound_operation(&self, _: &http::Method, _: &str, _: &str) -> Option<&'static str> {
        None
    }
}

/// Request latency buckets, in seconds: sub-millisecond health checks to minute-long starts.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// The longest label value taken from a guest's log line.
const MAX_GUEST_LABEL: usize = 64;

/// Every metric of one app.
pub struct Metrics {
    registry: Registry,
    labels: Arc<dyn MetricLabels>,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    admission_refused: IntCounter,
    outbound_requests: IntCounterVec,
    outbound_seconds: HistogramVec,
    kv_operations: IntCounterVec,
    guest_events: IntCounterVec,
    cron_ticks: IntCounterVec,
    slots_in_use: IntGauge,
    slots_capacity: IntGauge,
    pool_component_instances: IntGauge,
    pool_core_instances: IntGauge,
    pool_memories: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// What a key-value operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvOutcome {
    Ok,
    /// A compare-and-swap lost to another writer.
    CasConflict,
    Error,
}

impl KvOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::CasConflict => "cas_conflict",
            Self::Error => "error",
        }
    }
}

/// Registers a metric the constructor made. Names and labels are fixed and distinct, so neither
/// step can fail at run time; a failure is a programming error caught by every test.
fn registered<M>(registry: &Registry, name: &str, made: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = made.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(registry, name, HistogramVec::new(opts, labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, name, IntGauge::new(name, help))
}

impl Metrics {
    /// A fresh registry. The names are fixed and distinct, so registration cannot fail.
    pub fn new(labels: Arc<dyn MetricLabels>) -> Self {
        let registry = Registry::new();
        let refused = "kiloclaw_admission_refused_total";
        let admission_refused = registered(
            &registry,
            refused,
            IntCounter::new(
                refused,
                "Requests answered 503 because no instance slot freed up within the admission wait.",
            ),
        );
        Self {
            http_requests: counter(
                &registry,
                "kiloclaw_http_requests_total",
                "Inbound HTTP requests by route family and status.",
                &["route", "status"],
            ),
            http_seconds: histogram(
                &registry,
                "kiloclaw_http_request_duration_seconds",
                "Inbound HTTP request latency until the response head, by route family.",
                &["route"],
            ),
            admission_refused,
            outbound_requests: counter(
                &registry,
                "kiloclaw_outbound_http_requests_total",
                "Outbound HTTP calls by destination host, operation and status (`error`: no response).",
                &["destination", "operation", "status"],
            ),
            outbound_seconds: histogram(
                &registry,
                "kiloclaw_outbound_http_request_duration_seconds",
                "Outbound HTTP latency until the response head, by destination host and operation.",
                &["destination", "operation"],
            ),
            kv_operations: counter(
                &registry,
                "kiloclaw_kv_operations_total",
                "Key-value operations by store, operation and outcome (ok, cas_conflict, error).",
                &["store", "operation", "outcome"],
            ),
            guest_events: counter(
                &registry,
                "kiloclaw_guest_events_total",
                "Structured guest log events (lifecycle steps, reconcile decisions, proxy recoveries) by component, tag, action and outcome.",
                &["component", "tag", "action", "outcome"],
            ),
            cron_ticks: counter(
                &registry,
                "kiloclaw_cron_ticks_total",
                "Cron ticks by component and outcome (ok, error, trap, busy).",
                &["component", "outcome"],
            ),
            slots_in_use: gauge(
                &registry,
                "kiloclaw_instance_slots_in_use",
                "Component instances alive now (requests and cron ticks being served).",
            ),
            slots_capacity: gauge(
                &registry,
                "kiloclaw_instance_slots",
                "Instance slots: the most component instances alive at once (max_instances).",
            ),
            pool_component_instances: gauge(
                &registry,
                "kiloclaw_pool_component_instances",
                "Component instances allocated in wasmtime's pooling allocator.",
            ),
            pool_core_instances: gauge(
                &registry,
                "kiloclaw_pool_core_instances",
                "Core (module) instances allocated in wasmtime's pooling allocator.",
            ),
            pool_memories: gauge(
                &registry,
                "kiloclaw_pool_memories",
                "Linear memories allocated in wasmtime's pooling allocator.",
            ),
            registry,
            labels,
        }
    }

    pub(crate) fn observe_request(
        &self,
        method: &http::Method,
        path: &str,
        component: Option<&str>,
        status: u16,
        elapsed: Duration,
    ) {
        // Requests no component served (well-known endpoints, no route, static responses) are
        // the host's own: `none`, whatever the path looks like to the embedder.
        let route = match component {
            Some(component) => self.labels.route_family(method, path).unwrap_or(component),
            None => "none",
        };
        self.http_requests
            .with_label_values(&[route, status.to_string().as_str()])
            .inc();
        self.http_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn observe_refused(&self) {
        self.admission_refused.inc();
    }

    pub(crate) fn observe_outbound(
        &self,
        method: &http::Method,
        host: &str,
        path: &str,
        status: Option<u16>,
        elapsed: Duration,
    ) {
        let operation = self
            .labels
            .outbound_operation(method, host, path)
            .unwrap_or("other");
        let status = status.map_or_else(|| "error".to_owned(), |code| code.to_string());
        self.outbound_requests
            .with_label_values(&[host, operation, status.as_str()])
            .inc();
        self.outbound_seconds
            .with_label_values(&[host, operation])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn observe_kv(&self, store: &str, operation: &str, outcome: KvOutcome) {
        self.kv_operations
            .with_label_values(&[store, operation, outcome.as_str()])
            .inc();
    }

    pub(crate) fn observe_cron(&self, component: &str, outcome: &str) {
        self.cron_ticks
            .with_label_values(&[component, outcome])
            .inc();
    }

    /// Counts a guest's structured log line by its `tag`, `action` and `outcome` fields.
    pub(crate) fn observe_guest_event(&self, component: &str, fields: &Map<String, Value>) {
        let label = |name: &str| match fields.get(name).and_then(Value::as_str) {
            Some(value) if !value.is_empty() => truncated(value),
            _ => "none",
        };
        self.guest_events
            .with_label_values(&[component, label("tag"), label("action"), label("outcome")])
            .inc();
    }

    /// The text exposition, with the gauges read now.
    pub(crate) fn render(
        &self,
        slots_in_use: u32,
        slots: u32,
        engine: &wasmtime::Engine,
    ) -> String {
        self.slots_in_use.set(i64::from(slots_in_use));
        self.slots_capacity.set(i64::from(slots));
        if let Some(pool) = engine.pooling_allocator_metrics() {
            self.pool_component_instances
                .set(i64::try_from(pool.component_instances()).unwrap_or(i64::MAX));
            self.pool_core_instances
                .set(i64::try_from(pool.core_instances()).unwrap_or(i64::MAX));
            self.pool_memories
                .set(i64::try_from(pool.memories()).unwrap_or(i64::MAX));
        }
        let mut text = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::error!(tag = "metrics", error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// A guest-provided label cut to [`MAX_GUEST_LABEL`] bytes at a character boundary.
fn truncated(value: &str) -> &str {
    if value.len() <= MAX_GUEST_LABEL {
        return value;
    }
    let mut end = MAX_GUEST_LABEL;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Serves `GET /metrics` until `shutdown` flips; anything else is 404.
pub(crate) async fn serve(
    app: Arc<crate::AppInner>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(tag = "metrics", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let mut response = if request.method() == http::Method::GET
                        && request.uri().path() == "/metrics"
                    {
                        let mut response =
                            http::Response::new(Full::new(bytes::Bytes::from(app.metrics_text())));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        response
                    } else {
                        http::Response::new(Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    if request.uri().path() != "/metrics" || request.method() != http::Method::GET {
                        *response.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(tag = "metrics", error = %e, "connection ended with an error");
            }
        });
    }
}
