//! The HTTP core every LINE WORKS call goes through: pacing, a timeout per attempt, retries with
//! exponential backoff and jitter that honour the service's own wait, a deadline per call, and the
//! mapping of answers to [`LineWorksError`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{RequestBuilder, Response};
use tokio::time::Instant;

pub(super) use super::answer::json;
pub use super::answer::{MAX_BODY_BYTES, MAX_REQUESTED_WAIT};
use super::answer::{error_from_response, transport_error};
use super::limiter::{Budget, Limiter, RateLimits};
use super::{Api, LineWorksError};

/// Public LINE WORKS API 2.0 base URL.
pub const PUBLIC_API_BASE_URL: &str = "https://www.worksapis.com/v1.0";
/// Public LINE WORKS OAuth base URL.
pub const PUBLIC_AUTH_BASE_URL: &str = "https://auth.worksmobile.com/oauth2/v2.0";

/// Characters left as they are in a path segment (RFC 3986 unreserved); everything else,
/// including the `@` of a login ID, is percent-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one path segment (a user ID, login ID or channel ID) or query value.
pub fn path_segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// How hard to try before giving up.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First backoff (before jitter).
    pub min_delay: Duration,
    /// Longest backoff between two attempts, unless the service asks for longer.
    pub max_delay: Duration,
    /// Attempts including the first.
    pub max_attempts: u32,
    /// Time within which the last attempt may start, waits and retries included; an attempt
    /// already sent still gets its full request timeout.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_attempts: 6,
            deadline: Duration::from_secs(60),
        }
    }
}

/// Where and how to call LINE WORKS.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub api_base_url: String,
    pub auth_base_url: String,
    /// Domain whose rate budget the calls count against (`spec.domain`).
    pub domain: String,
    /// The LINE WORKS app calling (a fingerprint of its credentials; empty if unknown). With the
    /// domain it keys the budget: `domain` is only a claim, so a client of another app naming
    /// the same domain draws from (and can lower) a budget of its own, not this app's.
    pub app: String,
    /// Calls per minute per API; None turns client-side pacing off.
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Timeout of one attempt.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// The public endpoints, paced at the Free plan's 60 calls per minute.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            api_base_url: PUBLIC_API_BASE_URL.into(),
            auth_base_url: PUBLIC_AUTH_BASE_URL.into(),
            domain: domain.into(),
            app: String::new(),
            rate_limit_per_minute: NonZeroU32::new(60),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientConfig {
    /// The budget these calls draw from.
    pub fn budget(&self) -> Budget {
        Budget {
            domain: self.domain.clone(),
            app: self.app.clone(),
        }
    }
}

/// Sees every attempt: the API, its outcome (HTTP status, or "timeout"/"transport") and how long it
/// took. Used for metrics.
pub trait CallObserver: Send + Sync {
    fn observe(&self, api: Api, outcome: &str, elapsed: Duration);
}

/// A LINE WORKS API 2.0 client for one domain. Cheap to clone; clones share connections and
/// rate limiters.
#[derive(Clone)]
pub struct LineWorksClient {
    pub(super) http: reqwest::Client,
    pub(super) config: Arc<ClientConfig>,
    limits: Arc<RateLimits>,
    observer: Option<Arc<dyn CallObserver>>,
    /// Taken for each request on the wire (after pacing), if set: the caller's bound on
    /// requests in flight, never held while waiting for the budget.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for LineWorksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWorksClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Makes ring the process's TLS and JWT crypto provider (kube uses it too), once. Anything building a
/// reqwest client calls this first.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::jwt_ring::install();
}

/// The HTTP client settings every LINE WORKS connection uses: a connect timeout, our user agent,
/// no redirects, the system's CAs plus `extra_roots`, and the proxy the environment names
/// (`HTTPS_PROXY`/`NO_PROXY`). A redirect would carry the bearer token or the client secret to a
/// host nobody configured (and around the host allow-list), so a 3xx is an error instead.
pub fn http_client(
    connect_timeout: Duration,
    extra_roots: &crate::ExtraRoots,
) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    extra_roots
        .apply(reqwest::Client::builder())
        .connect_timeout(connect_timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("lineworks-operator/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// What one call is, for pacing, retries and errors.
#[derive(Clone, Copy, Debug)]
pub(super) struct Call {
    pub api: Api,
    pub repeat: Repeat,
}

/// What sending a request again does, which decides when a failed one may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Reads, JWT grants, revocation: repeating changes nothing, so any transient failure is
    /// retried.
    Harmless,
    /// Message sends: a repeat may deliver twice. LINE WORKS has no idempotency key, and a
    /// visitor must not go unannounced, so a 5xx is retried (at least once); a request whose
    /// answer was lost after sending is not (the caller is told it may have been delivered).
    AtLeastOnce,
    /// Refresh and code exchange: a processed request spends what it carries (the refresh
    /// token with rotation ON, the single-use code), so it is never repeated once it may have
    /// been processed: not after a lost answer, not after a 5xx.
    AtMostOnce,
}

impl LineWorksClient {
    /// A client sharing `limits` with every other client of the process.
    pub fn new(config: ClientConfig, limits: Arc<RateLimits>) -> Result<Self, LineWorksError> {
        let http = http_client(config.request_timeout, &crate::ExtraRoots::default())
            .map_err(|e| LineWorksError::InvalidRequest(format!("HTTP client: {e}")))?;
        Ok(Self::with_http(config, limits, http))
    }

    /// A client on an existing HTTP connection pool.
    pub fn with_http(config: ClientConfig, limits: Arc<RateLimits>, http: reqwest::Client) -> Self {
        let mut config = config;
        config.api_base_url = config.api_base_url.trim_end_matches('/').to_string();
        config.auth_base_url = config.auth_base_url.trim_end_matches('/').to_string();
        Self {
            http,
            config: Arc::new(config),
            limits,
            observer: None,
            gate: None,
        }
    }

    /// The same client for calls of the app with this fingerprint (see [`ClientConfig::app`]).
    pub fn for_app(mut self, app: &str) -> Self {
        let mut config = (*self.config).clone();
        config.app = app.to_string();
        self.config = Arc::new(config);
        self
    }

    /// Holds a permit of `gate` for each request on the wire (not while pacing).
    pub fn with_gate(mut self, gate: Arc<tokio::sync::Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub(super) fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base_url)
    }

    pub(super) fn auth_url(&self, path: &str) -> String {
        format!("{}{path}", self.config.auth_base_url)
    }

    fn limiter(&self, api: Api) -> Option<Arc<Limiter>> {
        self.config
            .rate_limit_per_minute
            .map(|n| self.limits.limiter(&self.config.budget(), api, n))
    }

    /// Sends the request `build` makes (again for each attempt) and returns the successful
    /// response, retrying transient failures within the deadline.
    pub(super) async fn send(
        &self,
        call: Call,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, LineWorksError> {
        let retry = &self.config.retry;
        let deadline = Instant::now() + retry.deadline;
        let attempts = AtomicU32::new(0);
        let hit_deadline = AtomicBool::new(false);
        let limiter = self.limiter(call.api);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(retry.min_delay)
            .with_max_delay(retry.max_delay)
            .with_max_times(retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let attempt = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(call, &build, limiter.as_deref(), deadline)
                .await
        };
        let result = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &LineWorksError| e.is_retryable(call.repeat))
            .adjust(|e: &LineWorksError, planned: Option<Duration>| {
                // The service's own wait wins over ours; past the deadline we stop.
                let wait = e
                    .retry_after()
                    .map(|w| w.max(planned.unwrap_or_default()))
                    .or(planned)?;
                if Instant::now() + wait >= deadline {
                    hit_deadline.store(true, Ordering::Relaxed);
                    return None;
                }
                Some(wait)
            })
            .await;
        result.map_err(|last| {
            if hit_deadline.load(Ordering::Relaxed)
                || matches!(last, LineWorksError::Timeout { .. } | LineWorksError::NotSent { .. } if Instant::now() >= deadline)
            {
                LineWorksError::DeadlineExceeded {
                    attempts: attempts.load(Ordering::Relaxed),
                    last: Box::new(last),
                }
            } else {
                last
            }
        })
    }

    async fn attempt(
        &self,
        call: Call,
        build: &impl Fn() -> RequestBuilder,
        limiter: Option<&Limiter>,
        deadline: Instant,
    ) -> Result<Response, LineWorksError> {
        let api = call.api;
        if let Some(limiter) = limiter
            && tokio::time::timeout_at(deadline, limiter.until_ready())
                .await
                .is_err()
        {
            return Err(LineWorksError::NotSent {
                api,
                after: self.config.retry.deadline,
            });
        }
        let _slot = match &self.gate {
            Some(gate) => match tokio::time::timeout_at(deadline, gate.acquire()).await {
                Ok(slot) => slot.ok(),
                Err(_) => {
                    return Err(LineWorksError::NotSent {
                        api,
                        after: self.config.retry.deadline,
                    });
                }
            },
            None => None,
        };
        if Instant::now() >= deadline {
            return Err(LineWorksError::NotSent {
                api,
                after: self.config.retry.deadline,
            });
        }
        // The deadline decides whether an attempt starts, never cuts one short: a POST aborted
        // mid-flight may still be delivered, and the caller would report it failed. So a call
        // takes at most deadline + request_timeout.
        let timeout = self.config.request_timeout;
        let started = std::time::Instant::now();
        let sent = build().timeout(timeout).send().await;
        if let Some(observer) = &self.observer {
            let outcome = match &sent {
                Ok(r) => r.status().as_str().to_string(),
                Err(e) if e.is_timeout() => "timeout".into(),
                Err(_) => "transport".into(),
            };
            observer.observe(api, &outcome, started.elapsed());
        }
        let response = sent.map_err(|e| transport_error(api, timeout, &e))?;
        if let Some(limiter) = limiter
            && let Some(wait) =
                super::answer::budget_spent_for(response.headers(), std::time::SystemTime::now())
        {
            limiter.pause(wait);
        }
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_from_response(api, response).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_ids_are_percent_encoded_in_paths() {
        assert_eq!(path_segment("hogehoge@testtest"), "hogehoge%40testtest");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("12345a12-b12c_x.y~z"), "12345a12-b12c_x.y~z");
    }
}
