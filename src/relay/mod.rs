//! `lineworks-operator relay`: visitor notifications over HTTP.
//!
//! As a sidecar it serves one notifier (`--notifier ns/name`) on 127.0.0.1 at `/v1/notifications`;
//! as a Deployment it serves every notifier it can see at `/v1/notifiers/{ns}/{name}/notifications`.
//! It reads notifiers and their token Secrets through watches ([`cache`]) and holds only a
//! send-only LINE WORKS client ([`MessageSender`]): on UNAUTHORIZED it asks the controller for a
//! new token (an Event on the notifier), waits for it and retries once. In Deployment mode a
//! caller presents the token of the notifier it sends through ([`CallerAuth::PerNotifier`]). Every accepted
//! notification is delivered or reported failed, and counted ([`metrics`]).

mod admission;
mod alert_message;
pub mod api;
mod cache;
mod delivery;
mod handlers;
mod idempotency;
mod metrics;
pub mod openapi;
pub(crate) mod problem;
mod validation;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use kube::{Client, ResourceExt};
use lineworks_client::{ExposeSecret, LineWorksClient, MessageSender, RateLimits, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::api::LineWorksNotifier;
use crate::endpoints::LastCheck;
use crate::http_server::{self, ServeLimits};
pub use metrics::RelayMetrics;
use problem::Refusal;

/// How the relay runs.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    pub listen: SocketAddr,
    /// Sidecar mode: the one notifier served at `/v1/...`.
    pub notifier: Option<(String, String)>,
    /// Sidecar mode: the notifier's token Secret (default `<name>-lineworks-token`), watched by
    /// name so the pod's Role can name exactly the two objects it reads.
    pub token_secret: Option<String>,
    /// The namespaces served, each watched on its own so namespaced Roles suffice; empty =
    /// all (the ServiceAccount's RBAC then decides).
    pub namespaces: Vec<String>,
    /// How callers prove they may send.
    pub auth: CallerAuth,
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
    /// Hosts a notifier's apiBaseURL may name besides LINE WORKS's own.
    pub allowed_hosts: crate::endpoints::AllowedHosts,
    /// Connections open at once on the notification port; more are closed on accept.
    pub max_connections: usize,
    /// Time a caller has to send a complete request head (and idle keep-alive time).
    pub header_read_timeout: Duration,
    /// A second port for /healthz, /readyz and /metrics only, so kubelet probes and scrapes
    /// are answered while the notification port is full of slow connections.
    pub probe_listen: Option<SocketAddr>,
    /// Certificate authorities LINE WORKS connections trust besides the system's.
    pub extra_roots: lineworks_client::ExtraRoots,
}

impl RelayOptions {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            notifier: None,
            token_secret: None,
            namespaces: Vec::new(),
            auth: CallerAuth::PerNotifier,
            max_body_bytes: 16 * 1024,
            queue_capacity: 1000,
            concurrency: 32,
            idempotency_window: Duration::from_secs(24 * 3600),
            deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            token_wait: Duration::from_secs(10),
            client_pacing: true,
            allowed_hosts: Default::default(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            probe_listen: None,
            extra_roots: Default::default(),
        }
    }
}

/// How callers prove they may send through a notifier.
#[derive(Clone, Debug)]
pub enum CallerAuth {
    /// Nobody needs to: only on a loopback address (a sidecar, whose pod is the boundary).
    Open,
    /// One bearer token for the whole relay: sidecar mode only, where it serves one notifier.
    RelayToken(SecretString),
    /// The notifier's own caller token, from the Secret the controller generates for it
    /// ([`caller_secret`](crate::api::contract::caller_secret)): a caller of one namespace
    /// cannot send through another's notifier.
    PerNotifier,
}

/// Errors that stop the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "refusing to serve without a bearer token on {0}: only a loopback address (sidecar) may run without one"
    )]
    NoTokenOnPublicAddress(SocketAddr),
    #[error(
        "a relay-wide token (--token-file) would open every notifier this relay serves: it is for sidecar mode (--notifier) only; in Deployment mode each caller presents its notifier's token (Secret <notifier>-relay-caller)"
    )]
    RelayTokenWithoutNotifier,
    #[error(
        "a sidecar (--notifier) watches only its notifier's token Secret: give --token-file, or --no-auth on a loopback address"
    )]
    CallerTokenInSidecar,
    #[error(
        "--namespace {namespace} differs from the namespace of --notifier {notifier_namespace}/…: a sidecar watches its notifier's namespace; drop --namespace or make them equal"
    )]
    NamespaceMismatch {
        namespace: String,
        notifier_namespace: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for LINE WORKS: {0}")]
    Http(#[from] reqwest::Error),
}

fn listen_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> RelayError {
    move |source| RelayError::Listen { addr, source }
}

/// State shared by every request.
struct Relay {
    options: RelayOptions,
    cache: cache::Cache,
    limits: Arc<RateLimits>,
    http: reqwest::Client,
    idempotency: idempotency::Store,
    /// Notifications admitted and not finished, as a whole and per domain.
    admission: Arc<admission::Admission>,
    /// Requests to LINE WORKS on the wire at once (taken after pacing, FIFO: fair across
    /// notifiers).
    sending: Arc<Semaphore>,
    metrics: Arc<RelayMetrics>,
    tasks: tokio_util::task::TaskTracker,
    /// The hosts notifiers' apiBaseURL may name, with the last URL checked and its verdict.
    endpoints: LastCheck,
}

impl Relay {
    /// The notifier `ns/name`, once the caller has shown it may send through it. Under
    /// per-notifier tokens an unknown notifier is refused like a wrong token, so a caller cannot
    /// learn which notifiers exist in other namespaces.
    fn caller_notifier(
        &self,
        headers: &HeaderMap,
        ns: &str,
        name: &str,
    ) -> Result<Arc<LineWorksNotifier>, Refusal> {
        let notifier = self.cache.notifier(ns, name);
        let presented = presented_token(headers);
        let allowed = match &self.options.auth {
            CallerAuth::Open => true,
            CallerAuth::RelayToken(expected) => same_token(presented, Some(expected)),
            CallerAuth::PerNotifier => same_token(
                presented,
                notifier
                    .as_deref()
                    .and_then(|n| self.cache.caller_token(n))
                    .as_ref(),
            ),
        };
        if !allowed {
            let how = match &self.options.auth {
                CallerAuth::PerNotifier => format!(
                    "present Authorization: Bearer <token>, the token in Secret {} (key {}) in namespace {ns}",
                    crate::api::contract::caller_secret::name(name),
                    crate::api::contract::caller_secret::TOKEN
                ),
                _ => "present Authorization: Bearer <relay token>".into(),
            };
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized", how));
        }
        notifier.ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "Unknown notifier",
                format!("no LineWorksNotifier {ns}/{name}"),
            )
        })
    }

    /// Counts and answers a refusal.
    fn reject(&self, refusal: Refusal) -> Response {
        self.metrics.rejected(refusal.status.as_u16());
        refusal.into_response()
    }

    /// A place in the queue for a notification of `notifier`, with the LINE WORKS settings it
    /// was admitted under (its delivery sends with them: worked out once per notification), or
    /// a 429 saying when to retry.
    fn admit(
        &self,
        notifier: &LineWorksNotifier,
    ) -> Result<(admission::Ticket, lineworks_client::ClientConfig), Box<Response>> {
        let config = self.client_config(notifier);
        self.admission
            .admit(
                &notifier.namespace().unwrap_or_default(),
                &config.budget(),
                config.rate_limit_per_minute,
            )
            .map(|ticket| (ticket, config))
            .map_err(|full| {
                let mut r = self.reject(full.refusal);
                if let Ok(v) = header::HeaderValue::from_str(&full.retry_after_secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Box::new(r)
            })
    }

    /// Where and how to call LINE WORKS for `notifier`; its budget is the one of its domain and
    /// the app its tokens were obtained with.
    fn client_config(&self, notifier: &LineWorksNotifier) -> lineworks_client::ClientConfig {
        let mut config = notifier.spec.client_config(
            self.options.request_timeout,
            self.options.deadline,
            self.options.client_pacing,
        );
        config.app = self.cache.app(notifier).unwrap_or_default();
        config
    }

    /// A send-only LINE WORKS client for a notifier's endpoints and budget (`config`, as
    /// admitted). It holds one of the relay's send slots only while a request is on the wire,
    /// never while pacing.
    fn sender(&self, config: lineworks_client::ClientConfig) -> MessageSender {
        LineWorksClient::with_http(config, Arc::clone(&self.limits), self.http.clone())
            .with_gate(Arc::clone(&self.sending))
            .into_sender()
    }
}

/// The bearer token in the Authorization header (scheme case-insensitive, RFC 9110), or "".
fn presented_token(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start())
        .unwrap_or_default()
}

/// Whether `presented` is `expected`, compared as SHA-256 digests in constant time, so neither
/// the position of the first wrong byte nor the expected length shows in the timing.
fn same_token(presented: &str, expected: Option<&SecretString>) -> bool {
    use sha2::{Digest, Sha256};
    let presented = Sha256::digest(presented.as_bytes());
    let (expected, known) = match expected {
        Some(t) => (Sha256::digest(t.expose_secret().as_bytes()), true),
        None => (Sha256::digest(b"no token to match"), false),
    };
    bool::from(presented.as_slice().ct_eq(expected.as_slice())) && known
}

/// A running relay; `shutdown` drains it.
pub struct RelayHandle {
    pub addr: SocketAddr,
    /// Where the probe port listens, if one was asked for.
    pub probe_addr: Option<SocketAddr>,
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

/// /healthz, /readyz and /metrics alone, for the probe port.
fn probe_router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics_text))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(relay)
}

/// Largest Alertmanager message accepted: a group of a few hundred alerts with their labels and
/// annotations (set the receiver's `max_alerts` to stay well under it).
pub const ALERTMANAGER_MAX_BODY_BYTES: usize = 1024 * 1024;

fn router(relay: Arc<Relay>) -> Router {
    use handlers::*;
    Router::new()
        .route("/v1/notifications", post(sidecar_notify))
        .route("/v1/test-notification", post(sidecar_test))
        .route("/v1/notifier", get(sidecar_readiness))
        .route(
            "/v1/alertmanager",
            post(sidecar_alertmanager).layer(DefaultBodyLimit::max(ALERTMANAGER_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/notifiers/{namespace}/{name}/alertmanager",
            post(alertmanager).layer(DefaultBodyLimit::max(ALERTMANAGER_MAX_BODY_BYTES)),
        )
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
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(relay.options.max_body_bytes))
        .layer(axum::middleware::map_response(problem::as_problem))
        .with_state(relay)
}

/// Starts the relay; it serves until [`RelayHandle::shutdown`].
pub async fn start(client: Client, options: RelayOptions) -> Result<RelayHandle, RelayError> {
    match &options.auth {
        CallerAuth::Open if !options.listen.ip().is_loopback() => {
            return Err(RelayError::NoTokenOnPublicAddress(options.listen));
        }
        CallerAuth::RelayToken(_) if options.notifier.is_none() => {
            return Err(RelayError::RelayTokenWithoutNotifier);
        }
        CallerAuth::PerNotifier if options.notifier.is_some() => {
            return Err(RelayError::CallerTokenInSidecar);
        }
        _ => {}
    }
    if let Some((notifier_namespace, _)) = &options.notifier
        && let Some(namespace) = options.namespaces.iter().find(|n| *n != notifier_namespace)
    {
        return Err(RelayError::NamespaceMismatch {
            namespace: namespace.clone(),
            notifier_namespace: notifier_namespace.clone(),
        });
    }
    lineworks_client::install_crypto_provider();
    let scope = cache::Scope {
        namespaces: match &options.notifier {
            Some((ns, _)) => vec![ns.clone()],
            None => options.namespaces.clone(),
        },
        notifier: options.notifier.as_ref().map(|(_, name)| name.clone()),
        token_secret: options.token_secret.clone(),
    };
    let cache = cache::Cache::start(client, scope, options.token_wait);
    let http = lineworks_client::http_client(options.request_timeout, &options.extra_roots)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(listen_error(options.listen))?;
    let addr = listener
        .local_addr()
        .map_err(listen_error(options.listen))?;
    let probe_listener = match options.probe_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(listen_error(at))?,
        ),
        None => None,
    };
    let probe_addr = match (&probe_listener, options.probe_listen) {
        (Some(l), Some(at)) => Some(l.local_addr().map_err(listen_error(at))?),
        _ => None,
    };
    let metrics = Arc::new(RelayMetrics::default());
    let relay = Arc::new(Relay {
        cache,
        limits: RateLimits::new(),
        http,
        idempotency: idempotency::Store::new(options.idempotency_window),
        admission: admission::Admission::new(
            options.queue_capacity,
            options.deadline,
            // A sidecar serves one namespace; a shared relay keeps room for the others.
            match options.notifier {
                Some(_) => options.queue_capacity,
                None => options.queue_capacity.div_ceil(2),
            },
        ),
        sending: Arc::new(Semaphore::new(options.concurrency.max(1))),
        metrics: Arc::clone(&metrics),
        tasks: tokio_util::task::TaskTracker::new(),
        endpoints: LastCheck::new(options.allowed_hosts.clone()),
        options,
    });
    let app = router(Arc::clone(&relay));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let limits = ServeLimits {
        max_connections: relay.options.max_connections,
        header_read_timeout: relay.options.header_read_timeout,
        max_header_bytes: 16 * 1024,
        // Long enough for a delivery's deadline and its last attempt, plus the body upload.
        request_timeout: relay.options.deadline
            + relay.options.request_timeout
            + relay.options.token_wait
            + Duration::from_secs(5),
    };
    if let Some(probe_listener) = probe_listener {
        let probes = probe_router(Arc::clone(&relay));
        let probe_limits = ServeLimits {
            max_connections: 64,
            ..ServeLimits::public(Duration::from_secs(10))
        };
        tokio::spawn(http_server::serve(
            probe_listener,
            probes,
            probe_limits,
            relay.metrics.serve.clone(),
            stopped.clone(),
        ));
    }
    let task = tokio::spawn(async move {
        http_server::serve(listener, app, limits, relay.metrics.serve.clone(), stopped).await;
        // Accepted notifications finish (or are reported failed by their deadline) before exit.
        relay.tasks.close();
        if tokio::time::timeout(relay.options.drain_timeout, relay.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                unfinished = relay.admission.queued(),
                "shutdown drain timed out with notifications still in flight"
            );
        }
    });
    Ok(RelayHandle {
        addr,
        probe_addr,
        metrics,
        stop,
        task,
    })
}

/// `lineworks-operator relay`: serves until SIGTERM/SIGINT, then drains.
pub async fn run(options: RelayOptions) -> Result<(), Box<dyn std::error::Error>> {
    let client = crate::kube_client::from_environment().await?;
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
