//! The LINE WORKS API 2.0 client, used by the controller and the relay. It knows nothing of
//! Kubernetes: no Kubernetes crate is among its dependencies (checked by tests/architecture.rs).
//! The API facts it relies on are LINE WORKS's published API 2.0 reference; where that is
//! silent (rate-limit window, `Retry-After` units), the choice is stated where it is made.
//! The relay gets only a [`MessageSender`], which cannot obtain, refresh or revoke tokens.

mod answer;
mod auth;
mod bot;
mod client;
mod credentials;
mod error;
mod jwt_ring;
mod limiter;
mod message;
mod trust;

pub use answer::hides_text;
pub use auth::TokenKind;
pub use bot::{Bot, BotDomain, Channel};
pub use client::{
    CallObserver, ClientConfig, LineWorksClient, MAX_BODY_BYTES, MAX_REQUESTED_WAIT,
    PUBLIC_API_BASE_URL, PUBLIC_AUTH_BASE_URL, RetryPolicy, http_client, install_crypto_provider,
    path_segment,
};
pub use credentials::{
    ClientCredentials, ExposeSecret, Refreshed, SecretString, ServiceAccount, TokenSet,
    token_fingerprint, unix_seconds,
};
pub use error::{Api, ErrorBody, LineWorksError};
pub use limiter::{Budget, RateLimits, calls_within, quota};
pub use message::{Action, Content, I18nText, MAX_TEXT_CHARS, MessageSender};
pub use trust::{ExtraRoots, TrustError};
