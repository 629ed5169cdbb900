//! A LINE WORKS API 2.0 emulator, faithful to LINE WORKS's published API 2.0 reference, for tests
//! and the demo. It depends on no other crate of this workspace (a Cargo fact, checked by
//! tests/architecture.rs), so a mistake in the client cannot be repeated here.
//! The real service cannot be reached from the build machines; this is the one stand-in the
//! project allows. It reads and writes the wire format on its own (no type is shared with the
//! client), rejects what the service would reject, and can inject faults per API.
//!
//! Served on one address: `/oauth2/v2.0/...` (auth), `/v1.0/...` (API) and `/admin/...` (the
//! emulator's own control surface: world, faults, delivered messages, request counts).

mod admin;
mod api;
mod oauth;
mod state;
mod tls;
mod world;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use state::{Delivered, Fault};
pub use tls::TlsIdentity;
pub use world::{AppDef, BotDef, ChannelDef, DomainDef, RateWindow, UserDef, World};

use state::Shared;

/// The API name a request is counted and faulted under.
pub fn classify(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (_, ["admin", ..]) => "admin",
        (&Method::POST, ["oauth2", "v2.0", "token"]) => "token",
        (&Method::POST, ["oauth2", "v2.0", "revoke"]) => "revoke",
        (_, ["oauth2", "v2.0", "authorize"]) => "authorize",
        (&Method::GET, ["v1.0", "bots", _]) => "get_bot",
        (&Method::GET, ["v1.0", "bots", _, "domains"]) => "list_bot_domains",
        (&Method::GET, ["v1.0", "bots", _, "channels", _]) => "get_channel",
        (&Method::GET, ["v1.0", "bots", _, "channels", _, "members"]) => "list_channel_members",
        (&Method::POST, ["v1.0", "bots", _, "users", _, "messages"]) => "send_user_message",
        (&Method::POST, ["v1.0", "bots", _, "channels", _, "messages"]) => "send_channel_message",
        _ => "other",
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/oauth2/v2.0/authorize",
            get(oauth::authorize_page).post(oauth::authorize_submit),
        )
        .route("/oauth2/v2.0/token", post(oauth::token))
        .route("/oauth2/v2.0/revoke", post(oauth::revoke))
        .route("/v1.0/bots/{bot_id}", get(api::get_bot))
        .route("/v1.0/bots/{bot_id}/domains", get(api::list_bot_domains))
        .route(
            "/v1.0/bots/{bot_id}/channels/{channel_id}",
            get(api::get_channel),
        )
        .route(
            "/v1.0/bots/{bot_id}/channels/{channel_id}/members",
            get(api::list_channel_members),
        )
        .route(
            "/v1.0/bots/{bot_id}/users/{user_id}/messages",
            post(api::send_user_message),
        )
        .route(
            "/v1.0/bots/{bot_id}/channels/{channel_id}/messages",
            post(api::send_channel_message),
        )
        .route(
            "/admin/world",
            get(admin::admin_world).put(admin::admin_put_world),
        )
        .route(
            "/admin/faults",
            get(admin::admin_faults)
                .post(admin::admin_add_fault)
                .delete(admin::admin_clear_faults),
        )
        .route(
            "/admin/messages",
            get(admin::admin_messages).delete(admin::admin_clear_messages),
        )
        .route("/admin/requests", get(admin::admin_requests))
        .route("/admin/tokens/expire", post(admin::admin_expire_tokens))
        .route("/admin/tokens/revoke-all", post(admin::admin_revoke_all))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"code": "NOT_FOUND", "description": "no such API"})),
            )
        })
        .with_state(state)
}

/// Why a connection is closed without an answer.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Applies the fault for this request, if any, then hands it to the router.
async fn handle(
    state: Shared,
    app: Router,
    request: Request<Body>,
) -> Result<Response<Body>, DroppedByFault> {
    let api = classify(request.method(), request.uri().path());
    let fault = state.lock().take_fault(api);
    if let Some(fault) = fault {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.drop {
            return Err(DroppedByFault);
        }
        if fault.drop_answer {
            let Ok(_) = app.oneshot(request).await;
            return Err(DroppedByFault);
        }
        if let Some(status) = fault.status {
            if fault.after_processing {
                let Ok(_) = app.oneshot(request).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = fault.body.unwrap_or_else(
                || json!({"code": status.as_str(), "description": "injected fault"}),
            );
            let mut response = (status, axum::Json(body)).into_response();
            for (name, value) in &fault.headers {
                if let (Ok(n), Ok(v)) = (
                    axum::http::HeaderName::try_from(name.as_str()),
                    axum::http::HeaderValue::try_from(value.as_str()),
                ) {
                    response.headers_mut().insert(n, v);
                }
            }
            return Ok(response);
        }
    }
    match app.oneshot(request).await {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    state: Shared,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    scheme: &'static str,
}

impl Emulator {
    /// Serves `world` on `listen` (e.g. `127.0.0.1:0` for a free port), over plain HTTP.
    pub async fn start(world: World, listen: &str) -> std::io::Result<Self> {
        Self::start_with(world, listen, None).await
    }

    /// Serves `world` on `listen`, over HTTPS when `tls` is given (as LINE WORKS does; pods reach
    /// the emulator that way, trusting its CA like a corporate proxy's).
    pub async fn start_with(
        world: World,
        listen: &str,
        tls: Option<&TlsIdentity>,
    ) -> std::io::Result<Self> {
        let acceptor = tls.map(tls::TlsIdentity::acceptor).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Shared::new(world);
        let app = router(state.clone());
        let (stop, mut stopped) = watch::channel(false);
        let serve_state = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.changed() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (state, app, mut stopped) = (serve_state.clone(), app.clone(), stopped.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            handle(state.clone(), app.clone(), request.map(Body::new))
                        },
                    );
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let connection = http1.serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                            }
                        }
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                std::time::Duration::from_secs(10),
                                acceptor.accept(stream),
                            );
                            let Ok(Ok(stream)) = handshake.await else {
                                return;
                            };
                            let connection = http1.serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            state,
            addr,
            stop,
            scheme,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, for `spec.apiBaseURL`.
    pub fn api_base_url(&self) -> String {
        format!("{}://{}/v1.0", self.scheme, self.addr)
    }

    /// Base URL of OAuth, for `spec.authBaseURL`.
    pub fn auth_base_url(&self) -> String {
        format!("{}://{}/oauth2/v2.0", self.scheme, self.addr)
    }

    /// Messages accepted so far, oldest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.state.lock().delivered.clone()
    }

    /// Forgets the messages accepted so far.
    pub fn clear_delivered(&self) {
        self.state.lock().delivered.clear();
    }

    /// Requests received for an API name (see [`classify`]), faulted ones included.
    pub fn requests(&self, api: &str) -> u64 {
        self.state
            .lock()
            .requests
            .get(api)
            .copied()
            .unwrap_or_default()
    }

    /// Requests received so far per API name (admin included), faulted ones included.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.state.lock().requests.clone()
    }

    /// Requests received for every API except admin, faulted ones included.
    pub fn total_requests(&self) -> u64 {
        self.state
            .lock()
            .requests
            .iter()
            .filter(|(k, _)| k.as_str() != "admin")
            .map(|(_, v)| v)
            .sum()
    }

    /// Sets the per-minute limit per API per domain (0 = off) and starts fresh windows.
    pub fn set_rate_limit(&self, per_minute: u32) {
        self.state.lock().set_rate_limit(per_minute);
    }

    /// Counts calls by `window` from now on (fresh windows).
    pub fn set_rate_window(&self, window: RateWindow) {
        let mut state = self.state.lock();
        state.world.rate_window = window;
        let limit = state.world.rate_limit_per_minute;
        state.set_rate_limit(limit);
    }

    /// Requests the per-minute limit answered with 429.
    pub fn rate_limited(&self) -> u64 {
        self.state.lock().rate_limited
    }

    pub fn add_fault(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// Faults not yet applied (a fault is applied when its request arrives, before any delay).
    pub fn pending_faults(&self) -> usize {
        self.state.lock().faults.len()
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Changes the tenant while running (delete a user, remove the bot from a room…).
    pub fn update_world(&self, change: impl FnOnce(&mut World)) {
        change(&mut self.state.lock().world);
    }

    /// Invalidates every access token, as if they had expired.
    pub fn expire_access_tokens(&self) {
        self.state.lock().access.clear();
    }

    /// Invalidates every token (the authorizing admin's password changed).
    pub fn revoke_all_tokens(&self) {
        let mut guard = self.state.lock();
        guard.access.clear();
        guard.refresh.clear();
    }

    /// Revokes the tokens an administrator authorized (password changed, admin role removed).
    pub fn user_password_changed(&self, user_id: &str) -> usize {
        self.state.lock().revoke_user_tokens(user_id)
    }

    /// Refresh tokens currently valid.
    pub fn live_refresh_tokens(&self) -> usize {
        self.state.lock().refresh.len()
    }

    /// Whether this refresh token would be accepted now.
    pub fn refresh_token_works(&self, token: &str) -> bool {
        self.state
            .lock()
            .refresh
            .get(token)
            .is_some_and(|g| g.expires_at > std::time::SystemTime::now())
    }

    /// Whether a newer refresh token replaced this one (rotation on, token kept by a reuse window).
    pub fn refresh_token_rotated(&self, token: &str) -> bool {
        self.state
            .lock()
            .refresh
            .get(token)
            .is_some_and(|g| g.rotated)
    }

    /// Refresh-token grants answered so far.
    pub fn refreshes(&self) -> u64 {
        self.state.lock().refreshes
    }

    /// Lets every refresh token lapse, as after 90 days unused.
    pub fn expire_refresh_tokens(&self) {
        let past = std::time::SystemTime::now() - Duration::from_secs(1);
        for g in self.state.lock().refresh.values_mut() {
            g.expires_at = past;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Errors of the `emulator` subcommand.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot read the world file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the world file {path} is not a valid world: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// `lineworks-operator emulator`: serves until Ctrl-C (or SIGTERM, as a pod), over HTTPS when a
/// certificate and key file are given.
pub async fn run(
    world_file: Option<&std::path::Path>,
    listen: &str,
    tls_files: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(), EmulatorError> {
    let world = match world_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::Read {
                path: path.display().to_string(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| EmulatorError::Parse {
                path: path.display().to_string(),
                source,
            })?
        }
        None => World::default(),
    };
    let tls = match tls_files {
        Some((cert, key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|source| EmulatorError::Read {
                    path: path.display().to_string(),
                    source,
                })
            };
            Some(TlsIdentity {
                cert_chain_pem: read(cert)?,
                key_pem: read(key)?,
            })
        }
        None => None,
    };
    let emulator = Emulator::start_with(world, listen, tls.as_ref())
        .await
        .map_err(|source| EmulatorError::Listen {
            listen: listen.into(),
            source,
        })?;
    tracing::info!(
        api = emulator.api_base_url(),
        auth = emulator.auth_base_url(),
        "LINE WORKS emulator serving; admin API under /admin"
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| EmulatorError::Listen {
        listen: listen.into(),
        source,
    })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_api() {
        assert_eq!(classify(&Method::POST, "/oauth2/v2.0/token"), "token");
        assert_eq!(classify(&Method::GET, "/v1.0/bots/1"), "get_bot");
        assert_eq!(
            classify(&Method::POST, "/v1.0/bots/1/users/a%40b/messages"),
            "send_user_message"
        );
        assert_eq!(
            classify(&Method::POST, "/v1.0/bots/1/channels/c/messages"),
            "send_channel_message"
        );
        assert_eq!(
            classify(&Method::GET, "/v1.0/bots/1/channels/c/members"),
            "list_channel_members"
        );
        assert_eq!(classify(&Method::GET, "/admin/messages"), "admin");
    }
}
