//! The LINE WORKS API 2.0 client, used by the controller and the relay. It knows nothing of
//! Kubernetes. Facts it relies on: `shared/lineworks-api.md` (and `docs/` in this repository).

mod auth;
mod bot;
mod client;
mod credentials;
mod error;
mod limiter;
mod message;

pub use auth::TokenKind;
pub use bot::{Bot, BotDomain, Channel};
pub use client::{
    CallObserver, ClientConfig, LineWorksClient, PUBLIC_API_BASE_URL, PUBLIC_AUTH_BASE_URL,
    RetryPolicy, install_crypto_provider, path_segment,
};
pub use credentials::{
    ClientCredentials, ExposeSecret, Refreshed, SecretString, ServiceAccount, TokenSet,
    token_fingerprint, unix_seconds,
};
pub use error::{Api, ErrorBody, LineWorksError};
pub use limiter::{RateLimits, quota};
pub use message::{Action, Content, I18nText, MAX_TEXT_CHARS, MessageSender};
