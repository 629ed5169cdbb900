//! `lineworks-operator relay`: visitor notifications over HTTP.
//!
//! As a sidecar it serves one notifier (`--notifier ns/name`) on 127.0.0.1 at `/v1/notifications`;
//! as a Deployment it serves every notifier it can see at `/v1/notifiers/{ns}/{name}/notifications`.
//! It reads notifiers and their token Secrets through watches and never refreshes tokens itself:
//! on UNAUTHORIZED it asks the controller (annotation on the notifier), waits for the new token and
//! retries once. Every accepted notification is delivered or reported failed, and counted.

pub mod api;
mod delivery;
mod idempotency;
pub mod openapi;
pub mod templates;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::api::LineWorksNotifier;
use crate::api::contract::{self, REFRESH_REQUESTED_ANNOTATION, token_secret};
use api::{
    NotificationRequest, NotificationResult, Outcome, Problem, Readiness, Target, TargetStatus,
};
use idempotency::{Answer, Claim};
use lineworks_client::{LineWorksClient, LineWorksError, RateLimits, SecretString};

/// How the relay runs.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    pub listen: SocketAddr,
    /// Sidecar mode: the one notifier served at `/v1/...`.
    pub notifier: Option<(String, String)>,
    /// Sidecar mode: the notifier's token Secret (default `<name>-lineworks-token`), watched by
    /// name so the pod's Role can name exactly the two objects it reads.
    pub token_secret: Option<String>,
    /// Watch one namespace; None = all (Deployment mode without a fixed notifier).
    pub namespace: Option<String>,
    /// Bearer token callers must present; None only on a loopback address.
    pub token: Option<SecretString>,
    pub max_body_bytes: usize,
    /// Notifications accepted but not finished, beyond which callers get 429.
    pub queue_capacity: usize,
    /// Notifications sent at once.
    pub concurrency: usize,
    pub idempotency_window: Duration,
    /// Time within which the last attempt may start, retries included (an attempt in flight is
    /// never cut short: it may already have been delivered).
    pub deadline: Duration,
    pub request_timeout: Duration,
    /// How long shutdown waits for accepted notifications.
    pub drain_timeout: Duration,
    /// How long to wait for the controller to renew a rejected token.
    pub token_wait: Duration,
    /// Pace calls under the notifier's per-minute budget (off only for measurements).
    pub client_pacing: bool,
}

impl RelayOptions {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            notifier: None,
            token_secret: None,
            namespace: None,
            token: None,
            max_body_bytes: 16 * 1024,
            queue_capacity: 1000,
            concurrency: 32,
            idempotency_window: Duration::from_secs(24 * 3600),
            deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            token_wait: Duration::from_secs(10),
            client_pacing: true,
        }
    }
}

/// Errors that stop the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "refusing to serve without a bearer token on {0}: only a loopback address (sidecar) may run without one"
    )]
    NoTokenOnPublicAddress(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for LINE WORKS: {0}")]
    Http(#[from] reqwest::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    status: String,
}

/// Relay metrics: accepted = delivered + partial + failed, always.
pub struct RelayMetrics {
    registry: Registry,
    accepted: Counter,
    finished: Family<OutcomeLabel, Counter>,
    targets: Family<TargetLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    in_flight: Gauge,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lineworks_relay");
        let accepted = Counter::default();
        let finished = Family::<OutcomeLabel, Counter>::default();
        let targets = Family::<TargetLabel, Counter>::default();
        let rejected = Family::<RejectLabel, Counter>::default();
        let in_flight = Gauge::default();
        registry.register(
            "notifications_accepted",
            "Notifications accepted for delivery",
            accepted.clone(),
        );
        registry.register(
            "notifications_finished",
            "Accepted notifications by outcome",
            finished.clone(),
        );
        registry.register("targets", "Targets by kind and status", targets.clone());
        registry.register(
            "requests_rejected",
            "Requests refused before delivery, by HTTP status",
            rejected.clone(),
        );
        registry.register(
            "in_flight",
            "Accepted notifications not finished yet",
            in_flight.clone(),
        );
        Self {
            registry,
            accepted,
            finished,
            targets,
            rejected,
            in_flight,
        }
    }
}

impl RelayMetrics {
    /// Every metric with one example series, for the generated reference (docs/metrics.md). The
    /// destructuring makes a new metric a compile error here until it is described.
    pub fn example_text() -> String {
        let m = Self::default();
        let Self {
            registry: _,
            accepted: _,
            finished,
            targets,
            rejected,
            in_flight: _,
        } = &m;
        let x = || "…".to_string();
        let _ = finished.get_or_create(&OutcomeLabel { outcome: x() });
        let _ = targets.get_or_create(&TargetLabel {
            kind: x(),
            status: x(),
        });
        let _ = rejected.get_or_create(&RejectLabel { status: x() });
        m.encode()
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Finished notifications of an outcome: "delivered", "partial" or "failed".
    pub fn finished(&self, outcome: &str) -> u64 {
        self.finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .get()
    }

    pub fn encode(&self) -> String {
        crate::telemetry::encode_metrics(&self.registry)
    }
}

struct Relay {
    client: Client,
    options: RelayOptions,
    notifiers: Store<LineWorksNotifier>,
    secrets: Store<Secret>,
    limits: Arc<RateLimits>,
    http: reqwest::Client,
    idempotency: idempotency::Store,
    queued: AtomicUsize,
    sending: Semaphore,
    metrics: Arc<RelayMetrics>,
    tasks: tokio_util::task::TaskTracker,
}

fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = Problem {
        type_: format!(
            "https://lineworks-operator.dev/problems/{}",
            status.as_u16()
        ),
        title: title.into(),
        status: status.as_u16(),
        detail: detail.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// A running relay; `shutdown` drains it.
pub struct RelayHandle {
    pub addr: SocketAddr,
    pub metrics: Arc<RelayMetrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops accepting, waits for accepted notifications (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the relay; it serves until [`RelayHandle::shutdown`].
pub async fn start(client: Client, options: RelayOptions) -> Result<RelayHandle, RelayError> {
    if options.token.is_none() && !options.listen.ip().is_loopback() {
        return Err(RelayError::NoTokenOnPublicAddress(options.listen));
    }
    lineworks_client::install_crypto_provider();
    let namespace = options
        .namespace
        .clone()
        .or_else(|| options.notifier.as_ref().map(|(ns, _)| ns.clone()));
    let (notifier_api, secret_api): (Api<LineWorksNotifier>, Api<Secret>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let mut notifier_config = watcher::Config::default();
    let mut secret_config = watcher::Config::default().labels(&contract::managed_selector());
    if let Some((_, name)) = &options.notifier {
        notifier_config = notifier_config.fields(&format!("metadata.name={name}"));
        let token_secret = options
            .token_secret
            .clone()
            .unwrap_or_else(|| token_secret::default_name(name));
        secret_config = secret_config.fields(&format!("metadata.name={token_secret}"));
    }
    let (notifiers, notifier_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    tokio::spawn(
        reflector::reflector(notifier_writer, watcher(notifier_api, notifier_config))
            .default_backoff()
            .for_each(|_| async {}),
    );
    tokio::spawn(
        reflector::reflector(secret_writer, watcher(secret_api, secret_config))
            .default_backoff()
            .for_each(|_| async {}),
    );
    let http = reqwest::Client::builder()
        .connect_timeout(options.request_timeout.min(Duration::from_secs(5)))
        .build()?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| RelayError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RelayError::Listen {
        addr: options.listen,
        source,
    })?;
    let metrics = Arc::new(RelayMetrics::default());
    let relay = Arc::new(Relay {
        client,
        notifiers,
        secrets,
        limits: RateLimits::new(),
        http,
        idempotency: idempotency::Store::new(options.idempotency_window),
        queued: AtomicUsize::new(0),
        sending: Semaphore::new(options.concurrency.max(1)),
        metrics: Arc::clone(&metrics),
        tasks: tokio_util::task::TaskTracker::new(),
        options,
    });
    let app = Router::new()
        .route("/v1/notifications", post(sidecar_notify))
        .route("/v1/test-notification", post(sidecar_test))
        .route("/v1/notifier", get(sidecar_readiness))
        .route(
            "/v1/notifiers/{namespace}/{name}/notifications",
            post(notify),
        )
        .route(
            "/v1/notifiers/{namespace}/{name}/test-notification",
            post(test_notify),
        )
        .route("/v1/notifiers/{namespace}/{name}", get(readiness))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(relay.options.max_body_bytes))
        .with_state(Arc::clone(&relay));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "relay server stopped");
        }
        // Accepted notifications finish (or are reported failed by their deadline) before exit.
        relay.tasks.close();
        if tokio::time::timeout(relay.options.drain_timeout, relay.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                unfinished = relay.queued.load(Ordering::Relaxed),
                "shutdown drain timed out with notifications still in flight"
            );
        }
    });
    Ok(RelayHandle {
        addr,
        metrics,
        stop,
        task,
    })
}

/// `lineworks-operator relay`: serves until SIGTERM/SIGINT, then drains.
pub async fn run(options: RelayOptions) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let handle = start(client, options).await?;
    tracing::info!(addr = %handle.addr, "relay serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    handle.shutdown().await;
    Ok(())
}

impl Relay {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.options.token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        use lineworks_client::ExposeSecret;
        bool::from(
            presented
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes()),
        )
    }

    fn reject(&self, status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
        self.metrics
            .rejected
            .get_or_create(&RejectLabel {
                status: status.as_u16().to_string(),
            })
            .inc();
        problem(status, title, detail)
    }

    fn notifier(&self, ns: &str, name: &str) -> Option<Arc<LineWorksNotifier>> {
        self.notifiers.get(&ObjectRef::new(name).within(ns))
    }

    fn token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        let ns = notifier.namespace()?;
        let secret = self
            .secrets
            .get(&ObjectRef::new(&notifier.token_secret_name()).within(&ns))?;
        let bytes = secret.data.as_ref()?.get(token_secret::ACCESS_TOKEN)?;
        String::from_utf8(bytes.0.clone())
            .ok()
            .map(SecretString::from)
    }

    fn lineworks(&self, notifier: &LineWorksNotifier) -> LineWorksClient {
        let config = notifier.spec.client_config(
            self.options.request_timeout,
            self.options.deadline,
            self.options.client_pacing,
        );
        LineWorksClient::with_http(config, Arc::clone(&self.limits), self.http.clone())
    }

    /// The stored token, waiting (up to `token_wait`) while the Secret watch catches up.
    async fn current_token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        let deadline = tokio::time::Instant::now() + self.options.token_wait;
        loop {
            if let Some(token) = self.token(notifier) {
                return Some(token);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the controller for a new token and waits until the Secret holds a different one.
    async fn renewed_token(
        &self,
        notifier: &LineWorksNotifier,
        rejected: &SecretString,
    ) -> Option<SecretString> {
        use lineworks_client::ExposeSecret;
        let ns = notifier.namespace()?;
        let api: Api<LineWorksNotifier> = Api::namespaced(self.client.clone(), &ns);
        let rejected_name = lineworks_client::token_fingerprint(rejected);
        let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: rejected_name}}});
        if let Err(e) = api
            .patch(
                &notifier.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(error = %e, "could not ask the controller for a new token");
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.options.token_wait;
        while tokio::time::Instant::now() < deadline {
            if let Some(token) = self.token(notifier)
                && token.expose_secret() != rejected.expose_secret()
            {
                return Some(token);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

fn ready_condition(notifier: &LineWorksNotifier) -> (bool, String, String) {
    let c = notifier
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match c {
        Some(c) => (c.status == "True", c.reason.clone(), c.message.clone()),
        None => (
            false,
            "Reconciling".into(),
            "the controller has not reported yet".into(),
        ),
    }
}

/// The notifier of sidecar mode.
fn sidecar(relay: &Relay) -> Result<(String, String), Box<Response>> {
    relay.options.notifier.clone().ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_FOUND,
            "No default notifier",
            "this relay serves several notifiers: use /v1/notifiers/{namespace}/{name}/…",
        ))
    })
}

async fn sidecar_notify(
    State(relay): State<Arc<Relay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match sidecar(&relay) {
        Ok((ns, name)) => handle_notification(relay, headers, ns, name, body, false).await,
        Err(r) => *r,
    }
}

async fn sidecar_test(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    match sidecar(&relay) {
        Ok((ns, name)) => handle_notification(relay, headers, ns, name, Bytes::new(), true).await,
        Err(r) => *r,
    }
}

async fn sidecar_readiness(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    match sidecar(&relay) {
        Ok((ns, name)) => readiness_of(&relay, &headers, &ns, &name),
        Err(r) => *r,
    }
}

async fn notify(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle_notification(relay, headers, ns, name, body, false).await
}

async fn test_notify(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    handle_notification(relay, headers, ns, name, Bytes::new(), true).await
}

async fn readiness(
    State(relay): State<Arc<Relay>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    readiness_of(&relay, &headers, &ns, &name)
}

fn readiness_of(relay: &Relay, headers: &HeaderMap, ns: &str, name: &str) -> Response {
    if !relay.authorized(headers) {
        return relay.reject(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "present Authorization: Bearer <relay token>",
        );
    }
    let Some(notifier) = relay.notifier(ns, name) else {
        return relay.reject(
            StatusCode::NOT_FOUND,
            "Unknown notifier",
            format!("no LineWorksNotifier {ns}/{name}"),
        );
    };
    let (mut ready, mut reason, mut message) = ready_condition(&notifier);
    if ready && relay.token(&notifier).is_none() {
        (ready, reason, message) = (
            false,
            "TokenNotSeen".into(),
            "the relay has not seen the notifier's token Secret yet".into(),
        );
    }
    axum::Json(Readiness {
        namespace: ns.into(),
        name: name.into(),
        ready,
        reason,
        message,
    })
    .into_response()
}

fn too_long(field: &str, value: &str, max: usize) -> Option<String> {
    let n = value.chars().count();
    (n > max).then(|| format!("{field} has {n} characters; at most {max} are accepted"))
}

async fn handle_notification(
    relay: Arc<Relay>,
    headers: HeaderMap,
    ns: String,
    name: String,
    body: Bytes,
    test: bool,
) -> Response {
    if !relay.authorized(&headers) {
        return relay.reject(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "present Authorization: Bearer <relay token>",
        );
    }
    let request: NotificationRequest = if test {
        NotificationRequest {
            visitor: Default::default(),
            host: None,
            route: None,
            text: None,
            idempotency_key: None,
        }
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return relay.reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send Content-Type: application/json",
            );
        }
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return relay.reject(
                    StatusCode::BAD_REQUEST,
                    "Malformed notification",
                    e.to_string(),
                );
            }
        }
    };
    let v = &request.visitor;
    let checks = [
        too_long("visitor.name", &v.name, api::MAX_FIELD_CHARS),
        too_long("visitor.company", &v.company, api::MAX_FIELD_CHARS),
        too_long("visitor.purpose", &v.purpose, api::MAX_FIELD_CHARS),
        too_long("visitor.note", &v.note, api::MAX_FIELD_CHARS),
        request
            .host
            .as_deref()
            .and_then(|h| too_long("host", h, 256)),
        request
            .text
            .as_deref()
            .and_then(|t| too_long("text", t, lineworks_client::MAX_TEXT_CHARS)),
    ];
    if let Some(why) = checks.into_iter().flatten().next() {
        return relay.reject(StatusCode::BAD_REQUEST, "Field too long", why);
    }
    if request.host.is_some() && request.route.is_some() {
        return relay.reject(
            StatusCode::BAD_REQUEST,
            "Ambiguous target",
            "give host or route, not both",
        );
    }
    let Some(notifier) = relay.notifier(&ns, &name) else {
        return relay.reject(
            StatusCode::NOT_FOUND,
            "Unknown notifier",
            format!("no LineWorksNotifier {ns}/{name}"),
        );
    };
    let route = match &request.route {
        None => None,
        Some(r) => match notifier.spec.routes.iter().find(|x| &x.name == r) {
            Some(route) => Some(route.clone()),
            None => {
                let known: Vec<&str> = notifier
                    .spec
                    .routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect();
                return relay.reject(
                    StatusCode::NOT_FOUND,
                    "Unknown route",
                    format!("notifier {ns}/{name} has no route {r:?} (routes: {known:?})"),
                );
            }
        },
    };
    if notifier.spec.suspend {
        return relay.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "Notifier suspended",
            format!("{ns}/{name} has spec.suspend: true"),
        );
    }
    let (ready, reason, message) = ready_condition(&notifier);
    if !ready {
        return relay.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "Notifier not ready",
            format!("{reason}: {message}"),
        );
    }

    let key = request
        .idempotency_key
        .clone()
        .or_else(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .map(|k| format!("{ns}/{name}/{k}"));
    let claim = key.as_ref().map(|k| {
        (
            k.clone(),
            relay.idempotency.claim(k, idempotency::body_hash(&body)),
        )
    });
    let sender = match claim {
        None => None,
        Some((_, Claim::Conflict)) => {
            return relay.reject(
                StatusCode::CONFLICT,
                "Idempotency key reused",
                "this idempotency key was used with a different body",
            );
        }
        Some((_, Claim::Done(answer))) => return answer_response(&answer),
        Some((_, Claim::Repeat(mut rx))) => {
            let answer = loop {
                if let Some(a) = rx.borrow_and_update().clone() {
                    break Some(a);
                }
                if rx.changed().await.is_err() {
                    break None;
                }
            };
            return match answer {
                Some(a) => answer_response(&a),
                None => problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Interrupted",
                    "the first request with this key did not finish",
                ),
            };
        }
        Some((k, Claim::New(tx))) => Some((k, tx)),
    };

    // Admission to the bounded queue.
    if relay.queued.fetch_add(1, Ordering::SeqCst) >= relay.options.queue_capacity {
        relay.queued.fetch_sub(1, Ordering::SeqCst);
        let mut r = relay.reject(
            StatusCode::TOO_MANY_REQUESTS,
            "Queue full",
            "too many notifications in flight; retry shortly",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    relay.metrics.accepted.inc();
    relay.metrics.in_flight.inc();

    // Delivery runs as its own task: a caller that disconnects does not cancel it, and shutdown
    // waits for it.
    let worker = Arc::clone(&relay);
    let job = relay.tasks.spawn(async move {
        let answer = deliver(&worker, &notifier, &request, route.as_ref(), test).await;
        worker.metrics.in_flight.dec();
        worker.queued.fetch_sub(1, Ordering::SeqCst);
        let outcome = match answer.result.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        };
        worker
            .metrics
            .finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        for t in &answer.result.targets {
            let status = match t.status {
                TargetStatus::Delivered => "delivered",
                TargetStatus::Failed => "failed",
                TargetStatus::Skipped => "skipped",
            };
            worker
                .metrics
                .targets
                .get_or_create(&TargetLabel {
                    kind: t.kind.clone(),
                    status: status.into(),
                })
                .inc();
        }
        if let Some((key, tx)) = &sender {
            worker.idempotency.finish(key, tx, answer.clone());
        }
        answer
    });
    match job.await {
        Ok(answer) => answer_response(&answer),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Delivery crashed",
            e.to_string(),
        ),
    }
}

fn answer_response(answer: &Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(&answer.result)).into_response()
}

async fn deliver(
    relay: &Relay,
    notifier: &LineWorksNotifier,
    request: &NotificationRequest,
    route: Option<&crate::api::Route>,
    test: bool,
) -> Answer {
    let _permit = relay.sending.acquire().await;
    let spec = &notifier.spec;
    let host_login = request
        .host
        .as_deref()
        .filter(|h| !h.trim().is_empty())
        .map(|h| delivery::login_id(notifier, h.trim()));
    let plan = match route {
        Some(r) => delivery::Plan {
            host: r.user.as_deref().map(|u| delivery::login_id(notifier, u)),
            fallback_allowed: false,
            default_user: spec.default_user_login_id(),
            room: r.room_id.clone(),
        },
        None => delivery::Plan {
            host: host_login.clone(),
            fallback_allowed: true,
            default_user: spec.default_user_login_id(),
            room: spec.room().map(str::to_string),
        },
    };
    let fields = templates::Fields {
        name: &request.visitor.name,
        company: &request.visitor.company,
        count: request.visitor.count,
        purpose: &request.visitor.purpose,
        note: &request.visitor.note,
        host: request.host.as_deref().unwrap_or_default(),
    };
    let content = if test {
        templates::content(
            spec.templates.as_ref().and_then(|t| t.test.as_ref()),
            contract::DEFAULT_TEST_TEXT,
            &fields,
        )
    } else {
        templates::visitor_content(notifier, &fields, request.text.as_deref())
    };
    let lineworks = relay.lineworks(notifier);
    let failed = |why: String, targets: Vec<Target>| Answer {
        status: 502,
        result: NotificationResult {
            outcome: Outcome::Failed,
            fallback: false,
            targets: if targets.is_empty() {
                vec![Target {
                    kind: "user".into(),
                    id: plan
                        .host
                        .clone()
                        .unwrap_or_else(|| plan.default_user.clone()),
                    status: TargetStatus::Failed,
                    code: Some("NO_TOKEN".into()),
                    description: Some(why),
                }]
            } else {
                targets
            },
        },
    };
    let Some(token) = relay.current_token(notifier).await else {
        return failed(
            "the controller has not stored a token for this notifier yet".into(),
            Vec::new(),
        );
    };
    let mut outcome = delivery::send(&lineworks, &token, spec.bot_id, &plan, &content).await;
    if let Err(LineWorksError::Unauthorized { .. }) = &outcome {
        outcome = match relay.renewed_token(notifier, &token).await {
            Some(renewed) => {
                delivery::send(&lineworks, &renewed, spec.bot_id, &plan, &content).await
            }
            None => outcome,
        };
    }
    match outcome {
        Ok((result, fallback, targets)) => Answer {
            status: match result {
                Outcome::Delivered => 200,
                Outcome::Partial => 207,
                Outcome::Failed => 502,
            },
            result: NotificationResult {
                outcome: result,
                fallback,
                targets,
            },
        },
        Err(e) => failed(
            format!("LINE WORKS rejected the token and no renewed one arrived: {e}"),
            Vec::new(),
        ),
    }
}

async fn readyz(State(relay): State<Arc<Relay>>) -> Response {
    // Ready once the watches have listed: before that every notifier would look unknown.
    let synced = |ready: Result<Result<(), _>, _>| matches!(ready, Ok(Ok(())));
    let wait = Duration::from_millis(100);
    let notifiers = synced(tokio::time::timeout(wait, relay.notifiers.wait_until_ready()).await);
    let secrets = synced(tokio::time::timeout(wait, relay.secrets.wait_until_ready()).await);
    if notifiers && secrets {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

async fn metrics_text(State(relay): State<Arc<Relay>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        relay.metrics.encode(),
    )
        .into_response()
}
