//! Prometheus metrics: the one registry (process-wide, so the router's
//! threads, the deploy pipeline and the SSH server record without being
//! handed anything), the label types, and the endpoint (`--metrics ADDR`,
//! off by default) that serves it as OpenMetrics text at `/metrics`.
//!
//! Label cardinality is bounded by construction: `app` is an app the rack
//! routes or deploys (requests for any other host count under
//! `(unknown)`), `method` one of the standard methods or `OTHER`, `status`
//! a class (`2xx`), `stage`, `outcome` and `reason` closed enums. No host
//! name, path, key name or other user string is ever a label.
//!
//! Does not know: what the counted things are; callers say.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{watch, Semaphore};

use crate::state::Rack;

/// Scrapes served at once; more wait in the listen backlog.
const MAX_SCRAPES: usize = 8;

/// The label of requests for a host no app serves.
pub const UNKNOWN_APP: &str = "(unknown)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    pub method: MethodLabel,
    pub status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabels {
    pub app: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Refusal,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl MethodLabel {
    pub fn of(m: &Method) -> MethodLabel {
        match *m {
            Method::GET => MethodLabel::GET,
            Method::HEAD => MethodLabel::HEAD,
            Method::POST => MethodLabel::POST,
            Method::PUT => MethodLabel::PUT,
            Method::PATCH => MethodLabel::PATCH,
            Method::DELETE => MethodLabel::DELETE,
            Method::OPTIONS => MethodLabel::OPTIONS,
            _ => MethodLabel::OTHER,
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl EncodeLabelValue for StatusClass {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let text = match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

impl StatusClass {
    pub fn of(s: StatusCode) -> StatusClass {
        match s.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

/// How a deploy (a push, `apps:deploy`, a config change, a rollback)
/// ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    succeeded,
    build_failed,
    release_failed,
    rollout_failed,
    failed,
}

/// The timed stages of a deploy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Stage {
    receive,
    build,
    release_phase,
    rollout,
}

/// Why an SSH connection or request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// Over `[limits] max_connections`.
    too_many_connections,
    /// Not authenticated within `preauth_timeout_secs`.
    preauth_timeout,
    /// An exec line over `max_command_bytes`.
    command_too_long,
    /// A shell or subsystem request: rack runs commands only.
    no_shell,
}

/// Every metric the rack exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<AppLabels, Histogram>,
    pub in_flight: Gauge,
    pub backend_connect_failures: Family<AppLabels, Counter>,
    pub deploys: Family<DeployLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram>,
    pub builds_queued: Gauge,
    pub builds_running: Gauge,
    pub ssh_sessions: Gauge,
    pub ssh_auth_failures: Counter,
    pub ssh_refusals: Family<ReasonLabels, Counter>,
    pub container_restarts: Family<AppLabels, Counter>,
}

fn latency() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn stage() -> Histogram {
    // 0.1 s .. ~27 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rack");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            in_flight: Gauge::default(),
            backend_connect_failures: Family::default(),
            deploys: Family::default(),
            stage_seconds: Family::new_with_constructor(stage as fn() -> Histogram),
            builds_queued: Gauge::default(),
            builds_running: Gauge::default(),
            ssh_sessions: Gauge::default(),
            ssh_auth_failures: Counter::default(),
            ssh_refusals: Family::default(),
            container_restarts: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "router_requests",
            "HTTP requests through the router, by app, method and status class",
            m.requests.clone(),
        );
        r.register(
            "router_request_duration_seconds",
            "Time from a request's arrival to its response head, by app",
            m.request_seconds.clone(),
        );
        r.register(
            "router_requests_in_flight",
            "Requests the router is answering now",
            m.in_flight.clone(),
        );
        r.register(
            "router_backend_connect_failures",
            "Requests whose connection to a backend failed (retried or not), by app",
            m.backend_connect_failures.clone(),
        );
        r.register(
            "deploys",
            "Deploys (pushes, apps:deploy, config changes, rollbacks) by app and outcome",
            m.deploys.clone(),
        );
        r.register(
            "deploy_stage_duration_seconds",
            "Duration of each deploy stage: receive, build, release_phase, rollout",
            m.stage_seconds.clone(),
        );
        r.register(
            "builds_queued",
            "Builds waiting for a build slot",
            m.builds_queued.clone(),
        );
        r.register(
            "builds_running",
            "Builds running now",
            m.builds_running.clone(),
        );
        r.register(
            "ssh_sessions",
            "Open SSH connections",
            m.ssh_sessions.clone(),
        );
        r.register(
            "ssh_auth_failures",
            "Public keys offered with a valid signature that no rack key matches",
            m.ssh_auth_failures.clone(),
        );
        r.register(
            "ssh_refusals",
            "SSH connections or requests refused, by reason",
            m.ssh_refusals.clone(),
        );
        r.register(
            "container_restarts",
            "App containers that exited on their own and were restarted by the engine, by app",
            m.container_restarts.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The same in Prometheus' older text format (0.0.4), for clients that
    /// do not ask for OpenMetrics (`curl`, `promtool check metrics`).
    pub fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode())
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: a counter family `x` whose
/// samples are `x_total` is described as `x_total` (the older format names
/// a family by its samples), and the `# EOF` marker goes.
fn to_prometheus_text(open: &str) -> String {
    let lines: Vec<&str> = open.lines().filter(|l| *l != "# EOF").collect();
    let mut out = String::with_capacity(open.len() + 256);
    for (i, line) in lines.iter().enumerate() {
        let counter_of = |l: &str| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.strip_suffix(" counter"))
                .map(str::to_string)
        };
        let renamed = if let Some(name) = counter_of(line) {
            Some(format!("# TYPE {name}_total counter"))
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            match lines.get(i + 1).and_then(|n| counter_of(n)) {
                Some(n) if n == name => Some(format!("# HELP {name}_total{}", &rest[name.len()..])),
                _ => None,
            }
        } else {
            None
        };
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Records a router request.
pub fn request(app: &str, method: &Method, status: StatusCode, took: Duration) {
    let m = get();
    m.requests
        .get_or_create(&RequestLabels {
            app: app.to_string(),
            method: MethodLabel::of(method),
            status: StatusClass::of(status),
        })
        .inc();
    m.request_seconds
        .get_or_create(&AppLabels {
            app: app.to_string(),
        })
        .observe(took.as_secs_f64());
}

pub fn backend_connect_failure(app: &str) {
    get()
        .backend_connect_failures
        .get_or_create(&AppLabels {
            app: app.to_string(),
        })
        .inc();
}

pub fn deploy(app: &str, outcome: Outcome) {
    get()
        .deploys
        .get_or_create(&DeployLabels {
            app: app.to_string(),
            outcome,
        })
        .inc();
}

pub fn stage_took(stage: Stage, took: Duration) {
    get()
        .stage_seconds
        .get_or_create(&StageLabels { stage })
        .observe(took.as_secs_f64());
}

pub fn refusal(reason: Refusal) {
    get()
        .ssh_refusals
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

pub fn container_restart(app: &str) {
    get()
        .container_restarts
        .get_or_create(&AppLabels {
            app: app.to_string(),
        })
        .inc();
}

/// Adds one to a gauge until dropped (builds queued/running, sessions).
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn new(g: &'static Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    _rack: Arc<Rack>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            _ = crate::router::stopped(&mut stop) => return Ok(()),
        };
        let socket = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::router::stopped(&mut stop) => return Ok(()),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .serve_connection(TokioIo::new(socket), service_fn(answer));
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let open_metrics = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (status, ctype, body) = if req.uri().path() != "/metrics" || req.method() != Method::GET {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        )
    } else if open_metrics {
        (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            get().encode(),
        )
    } else {
        (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            get().encode_prometheus(),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests;
