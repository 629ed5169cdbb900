//! The HTTP core every LINE WORKS call goes through: pacing, a timeout per attempt, retries with
//! exponential backoff and jitter that honour the service's own wait, a deadline per call, and the
//! mapping of answers to [`LineWorksError`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::limiter::{Limiter, RateLimits};
use super::{Api, ErrorBody, LineWorksError};

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
            rate_limit_per_minute: NonZeroU32::new(60),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
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
}

impl std::fmt::Debug for LineWorksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWorksClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Makes ring the process's TLS crypto provider (kube uses it too), once. Anything building a
/// reqwest client calls this first.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client settings every LINE WORKS connection uses: a connect timeout, our user agent,
/// and no redirects. A redirect would carry the bearer token or the client secret to a host
/// nobody configured (and around the host allow-list), so a 3xx is an error instead.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
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
        let http = http_client(config.request_timeout)
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
        }
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
            .map(|n| self.limits.limiter(&self.config.domain, api, n))
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
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_from_response(api, response).await)
    }
}

/// Reads a JSON answer into the client's own wire type.
pub(super) async fn json<T: DeserializeOwned>(
    api: Api,
    response: Response,
) -> Result<T, LineWorksError> {
    let bytes = read_capped(api, response).await?;
    serde_json::from_slice(&bytes).map_err(|e| LineWorksError::InvalidResponse {
        api,
        detail: format!("body does not match the documented format: {e}"),
    })
}

/// Reads a body of at most [`MAX_BODY_BYTES`]; a longer one is an invalid answer, read no
/// further.
async fn read_capped(api: Api, mut response: Response) -> Result<Vec<u8>, LineWorksError> {
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| LineWorksError::InvalidResponse {
                api,
                detail: format!("reading the body: {}", e.without_url()),
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(LineWorksError::InvalidResponse {
                api,
                detail: format!("the answer is longer than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
}

fn transport_error(api: Api, timeout: Duration, e: &reqwest::Error) -> LineWorksError {
    // A failed connect means nothing was sent; anything later may have reached the service.
    let maybe_delivered = !e.is_connect();
    if e.is_timeout() {
        return LineWorksError::Timeout {
            api,
            after: timeout,
            maybe_delivered,
        };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    LineWorksError::Transport {
        api,
        detail,
        maybe_delivered,
    }
}

async fn error_from_response(api: Api, response: Response) -> LineWorksError {
    let status = response.status();
    let retry_after = wait_requested(response.headers(), SystemTime::now());
    let text = read_capped(api, response)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let body = parse_error_body(&text);
    let code = status.as_u16();
    match status {
        s if s.is_redirection() => LineWorksError::InvalidResponse {
            api,
            detail: format!(
                "HTTP {code} redirect, not followed: set the base URL to the address that answers"
            ),
        },
        StatusCode::TOO_MANY_REQUESTS => LineWorksError::RateLimited {
            api,
            retry_after,
            body,
        },
        s if s.is_server_error() => LineWorksError::Server {
            api,
            status: code,
            body,
        },
        // On the token endpoint every other refusal is about the credentials or the grant.
        _ if matches!(api, Api::Token | Api::Revoke) => {
            LineWorksError::TokenRejected { status: code, body }
        }
        StatusCode::UNAUTHORIZED => LineWorksError::Unauthorized {
            api,
            status: code,
            body,
        },
        StatusCode::FORBIDDEN if body.code == "UNAUTHORIZED" => LineWorksError::Unauthorized {
            api,
            status: code,
            body,
        },
        StatusCode::FORBIDDEN => LineWorksError::Forbidden { api, body },
        StatusCode::NOT_FOUND => LineWorksError::NotFound { api, body },
        _ => LineWorksError::BadRequest {
            api,
            status: code,
            body,
        },
    }
}

/// `{code, description}` (API), `{error, error_description}` (OAuth), or the start of the text.
fn parse_error_body(text: &str) -> ErrorBody {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return ErrorBody {
                code: String::new(),
                description: printable(text.trim(), 200),
            };
        }
    };
    let field = |names: &[&str]| {
        printable(
            names
                .iter()
                .find_map(|n| value.get(*n).and_then(|v| v.as_str()))
                .unwrap_or_default(),
            500,
        )
    };
    ErrorBody {
        code: field(&["code", "error"]),
        description: field(&["description", "error_description", "message"]),
    }
}

/// At most `max` characters of a remote text, without control, bidi-override or zero-width
/// characters: it ends up in status messages and events, where such characters could hide or
/// reorder what a person reads.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| {
            !(c.is_control()
                || matches!(
                    c,
                    '\u{061c}'
                        | '\u{200b}'..='\u{200f}'
                        | '\u{202a}'..='\u{202e}'
                        | '\u{2060}'..='\u{2069}'
                        | '\u{feff}'
                ))
        })
        .take(max)
        .collect()
}

/// The longest wait a server's answer can ask for: a lying or broken server must not make time
/// arithmetic overflow, nor park a caller for longer than a rate window or two.
pub const MAX_REQUESTED_WAIT: Duration = Duration::from_secs(600);

/// The most of a response body this client reads: LINE WORKS's answers are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The wait a 429 asks for, at most [`MAX_REQUESTED_WAIT`].
pub(super) fn wait_requested(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    raw_wait_requested(headers, now).map(|w| w.min(MAX_REQUESTED_WAIT))
}

/// `Retry-After` (seconds), else `rateLimit-reset` (seconds until the window resets, or an epoch
/// time in seconds: the unit is undocumented, so both are accepted).
fn raw_wait_requested(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number = |name: &str| -> Option<u64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v.ceil() as u64)
    };
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    let reset = number("ratelimit-reset")?;
    const EPOCH_THRESHOLD: u64 = 1_000_000_000;
    if reset >= EPOCH_THRESHOLD {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    Some(Duration::from_secs(reset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_texts_lose_control_and_invisible_characters() {
        let body =
            parse_error_body(r#"{"code": "BAD\u0007", "description": "ok\u202eevil\u200b\nnext"}"#);
        assert_eq!(body.code, "BAD");
        assert_eq!(body.description, "okevil next");
        let long = "x".repeat(10_000);
        assert_eq!(parse_error_body(&long).description.chars().count(), 200);
    }

    #[test]
    fn a_wait_asked_for_is_clamped() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        for (name, value) in [
            ("retry-after", "1e300"),
            ("retry-after", "18446744073709551615"),
            ("ratelimit-reset", "99999999999999999999"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(
                wait_requested(&h, now),
                Some(MAX_REQUESTED_WAIT),
                "{name}: {value}"
            );
        }
    }
    use reqwest::header::HeaderValue;

    #[test]
    fn login_ids_are_percent_encoded_in_paths() {
        assert_eq!(path_segment("hogehoge@testtest"), "hogehoge%40testtest");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("12345a12-b12c_x.y~z"), "12345a12-b12c_x.y~z");
    }

    #[test]
    fn waits_come_from_retry_after_or_the_reset_header_in_either_unit() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(wait_requested(&h, now), None);
        h.insert("rateLimit-reset", HeaderValue::from_static("17"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(17)));
        h.insert("ratelimit-reset", HeaderValue::from_static("2000000030"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(30)));
        h.insert("Retry-After", HeaderValue::from_static("3"));
        assert_eq!(wait_requested(&h, now), Some(Duration::from_secs(3)));
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        let api = parse_error_body(r#"{"code":"NOT_FOUND","description":"bot not found"}"#);
        assert_eq!(
            (api.code.as_str(), api.description.as_str()),
            ("NOT_FOUND", "bot not found")
        );
        let oauth =
            parse_error_body(r#"{"error":"invalid_client","error_description":"bad secret"}"#);
        assert_eq!(oauth.code, "invalid_client");
        let text = parse_error_body("Bad Gateway");
        assert_eq!(text.description, "Bad Gateway");
    }
}
