//! What can go wrong talking to LINE WORKS, in terms a caller can act on. Every variant names the
//! API it came from and carries LINE WORKS's own `code` and `description` when there was a body;
//! none carries a token, a secret or a request body.

use std::fmt;
use std::time::Duration;

use super::client::Repeat;

/// The LINE WORKS APIs this client calls; rate limits are counted per API and per domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    Token,
    Revoke,
    GetBot,
    ListBotDomains,
    GetChannel,
    ListChannelMembers,
    SendUserMessage,
    SendChannelMessage,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Token => "token",
            Api::Revoke => "revoke",
            Api::GetBot => "get_bot",
            Api::ListBotDomains => "list_bot_domains",
            Api::GetChannel => "get_channel",
            Api::ListChannelMembers => "list_channel_members",
            Api::SendUserMessage => "send_user_message",
            Api::SendChannelMessage => "send_channel_message",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LINE WORKS's error body, `{"code": "...", "description": "..."}` (or OAuth's
/// `error`/`error_description` on the token endpoint). Empty strings when there was no body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub description: String,
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code.is_empty(), self.description.is_empty()) {
            (true, true) => f.write_str("no error body"),
            (false, true) => write!(f, "{}", self.code),
            (true, false) => write!(f, "{}", self.description),
            (false, false) => write!(f, "{}: {}", self.code, self.description),
        }
    }
}

/// Errors of the LINE WORKS client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LineWorksError {
    /// 401, or 403 with code UNAUTHORIZED: the access token is expired or revoked.
    #[error("{api}: access token rejected (HTTP {status}, {body})")]
    Unauthorized {
        api: Api,
        status: u16,
        body: ErrorBody,
    },
    /// 403 otherwise: missing scope, bot not added to the domain, bot not in the room…
    #[error("{api}: forbidden (HTTP 403, {body})")]
    Forbidden { api: Api, body: ErrorBody },
    /// 404: unknown bot, user or room.
    #[error("{api}: not found (HTTP 404, {body})")]
    NotFound { api: Api, body: ErrorBody },
    /// 429: the per-minute limit of this API for the domain was reached.
    #[error("{api}: rate limited (HTTP 429, {body}){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        api: Api,
        retry_after: Option<Duration>,
        body: ErrorBody,
    },
    /// The token endpoint refused the request (wrong client secret, expired or reused code or
    /// refresh token, bad assertion…).
    #[error("token endpoint refused the request (HTTP {status}, {body})")]
    TokenRejected { status: u16, body: ErrorBody },
    /// Another 4xx: the request itself is wrong (LINE WORKS's description says how).
    #[error("{api}: request rejected (HTTP {status}, {body})")]
    BadRequest {
        api: Api,
        status: u16,
        body: ErrorBody,
    },
    /// 5xx.
    #[error("{api}: LINE WORKS server error (HTTP {status}, {body})")]
    Server {
        api: Api,
        status: u16,
        body: ErrorBody,
    },
    /// No answer in time. `maybe_delivered` is true when the request had been sent.
    #[error("{api}: no answer within {after:?}{}", if *maybe_delivered { " (the request may have been processed)" } else { "" })]
    Timeout {
        api: Api,
        after: Duration,
        maybe_delivered: bool,
    },
    /// The connection failed (DNS, refused, reset, TLS). `maybe_delivered` is true when it failed
    /// after the request had been sent.
    #[error("{api}: could not reach LINE WORKS: {detail}")]
    Transport {
        api: Api,
        detail: String,
        maybe_delivered: bool,
    },
    /// Never sent: the domain's per-minute budget (this client's pacing) had no room before the
    /// deadline. LINE WORKS was not asked, so nothing can have been delivered.
    #[error(
        "{api}: not sent: the domain's per-minute budget had no room within the {after:?} deadline (LINE WORKS was not asked)"
    )]
    NotSent { api: Api, after: Duration },
    /// An answer that does not follow the documented format.
    #[error("{api}: unexpected answer: {detail}")]
    InvalidResponse { api: Api, detail: String },
    /// Retrying stopped at the caller's deadline; the last error is attached.
    #[error("gave up at the deadline after {attempts} attempts; last error: {last}")]
    DeadlineExceeded {
        attempts: u32,
        last: Box<LineWorksError>,
    },
    /// The Service Account private key cannot be used.
    #[error("private key is unusable: {0}")]
    PrivateKeyInvalid(String),
    /// A request this client refuses to send because LINE WORKS would reject it.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl LineWorksError {
    /// The API the error came from, if any.
    pub fn api(&self) -> Option<Api> {
        match self {
            LineWorksError::Unauthorized { api, .. }
            | LineWorksError::Forbidden { api, .. }
            | LineWorksError::NotFound { api, .. }
            | LineWorksError::RateLimited { api, .. }
            | LineWorksError::BadRequest { api, .. }
            | LineWorksError::Server { api, .. }
            | LineWorksError::Timeout { api, .. }
            | LineWorksError::Transport { api, .. }
            | LineWorksError::NotSent { api, .. }
            | LineWorksError::InvalidResponse { api, .. } => Some(*api),
            LineWorksError::TokenRejected { .. } => Some(Api::Token),
            LineWorksError::DeadlineExceeded { last, .. } => last.api(),
            LineWorksError::PrivateKeyInvalid(_) | LineWorksError::InvalidRequest(_) => None,
        }
    }

    /// LINE WORKS's error body, when the error came with one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            LineWorksError::Unauthorized { body, .. }
            | LineWorksError::Forbidden { body, .. }
            | LineWorksError::NotFound { body, .. }
            | LineWorksError::RateLimited { body, .. }
            | LineWorksError::TokenRejected { body, .. }
            | LineWorksError::BadRequest { body, .. }
            | LineWorksError::Server { body, .. } => Some(body),
            LineWorksError::DeadlineExceeded { last, .. } => last.body(),
            _ => None,
        }
    }

    /// LINE WORKS's error code (or OAuth's `error`), or `ERROR` when the answer carried none.
    pub fn code(&self) -> &str {
        self.body()
            .map(|b| b.code.as_str())
            .filter(|c| !c.is_empty())
            .unwrap_or("ERROR")
    }

    /// Whether the request never left this process (the pacing budget had no room in time).
    pub fn never_sent(&self) -> bool {
        match self {
            LineWorksError::NotSent { .. } => true,
            LineWorksError::DeadlineExceeded { last, .. } => last.never_sent(),
            _ => false,
        }
    }

    /// Whether waiting may help: a transient error, or retries of one that ran out at the
    /// caller's deadline. Nothing in the configuration is wrong.
    pub fn may_pass(&self) -> bool {
        self.is_transient() || matches!(self, LineWorksError::DeadlineExceeded { .. })
    }

    /// Whether the same request may succeed later without any change (429, 5xx, network).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LineWorksError::RateLimited { .. }
                | LineWorksError::Server { .. }
                | LineWorksError::Timeout { .. }
                | LineWorksError::Transport { .. }
                | LineWorksError::NotSent { .. }
        )
    }

    /// Whether the same request may be sent again: transient, and as [`Repeat`] allows for a
    /// request that may have been processed.
    pub(super) fn is_retryable(&self, repeat: Repeat) -> bool {
        match self {
            LineWorksError::Timeout {
                maybe_delivered, ..
            }
            | LineWorksError::Transport {
                maybe_delivered, ..
            } => repeat == Repeat::Harmless || !maybe_delivered,
            LineWorksError::Server { .. } => {
                repeat != Repeat::AtMostOnce || !self.maybe_processed()
            }
            other => other.is_transient(),
        }
    }

    /// Whether the request may have been processed although it did not succeed: a timeout or a
    /// dropped connection after sending, or a 5xx other than 503 (a server may fail after doing
    /// the work; 503 says it could not take the request at all).
    pub fn maybe_processed(&self) -> bool {
        match self {
            LineWorksError::Server { status, .. } => *status != 503,
            LineWorksError::Timeout {
                maybe_delivered, ..
            }
            | LineWorksError::Transport {
                maybe_delivered, ..
            } => *maybe_delivered,
            LineWorksError::DeadlineExceeded { last, .. } => last.maybe_processed(),
            _ => false,
        }
    }

    /// The wait the service asked for (429 headers), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LineWorksError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
