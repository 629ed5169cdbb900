//! `/healthz`, `/readyz` and `/metrics` of a controller replica.
//!
//! - `/healthz`: the process's async runtime is answering (a wedged runtime fails it).
//! - `/readyz`: this replica has started (leader or standby waiting for the lease) and can reach
//!   the Kubernetes API right now.
//! - `/metrics`: Prometheus text format.
//! - the OAuth callback (default `/oauth/callback`), see [`super::callback`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;

use super::metrics::Metrics;

/// What `/readyz` reports besides reachability of the Kubernetes API.
#[derive(Default)]
pub struct Health {
    /// Set once this replica has started (leader, or standby waiting for the lease).
    pub ready: AtomicBool,
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    client: Client,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    client: Client,
    callback: Option<(String, Arc<super::Context>)>,
) {
    let mut app = Router::new();
    if let Some((path, ctx)) = callback {
        app = app.route(&path, get(super::callback::callback).with_state(ctx));
    }
    let app = app
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared {
            metrics: Arc::clone(&metrics),
            health,
            client,
        });
    // The OAuth callback may be exposed through an Ingress: bounded like any public port.
    let counters = metrics.serve.clone();
    let (_runs_for_the_process, never) = tokio::sync::watch::channel(false);
    crate::http_server::serve(
        listener,
        app,
        crate::http_server::ServeLimits::public(Duration::from_secs(30)),
        counters,
        never,
    )
    .await;
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if !s.health.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_string());
    }
    match tokio::time::timeout(Duration::from_secs(2), s.client.apiserver_version()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok".to_string()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Kubernetes API: {e}"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Kubernetes API: no answer in 2s".to_string(),
        ),
    }
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
