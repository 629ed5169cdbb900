//! Serving HTTP to callers who may be hostile (the relay's port is reachable from any pod, the
//! OAuth callback from the Internet): every connection is bounded before anyone is
//! authenticated. `axum::serve` sets no header timeout and no connection limit, so a few
//! thousand slow or idle connections would hold memory forever and one half-sent request head
//! would hold up shutdown; this loop uses hyper directly with:
//!
//! - a connection cap (beyond it, new connections are closed at once);
//! - a header-read timeout (idle keep-alive connections included) and a small header buffer;
//! - a whole-request timeout (a slow body counts against it);
//! - a shutdown that lets requests in progress finish and drops every connection that has not
//!   sent a complete request head.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Bounds of one server.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (also how long an idle keep-alive
    /// connection stays open).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Time from a complete head to the end of the response (body upload included).
    pub request_timeout: Duration,
}

impl ServeLimits {
    /// Defaults for a public port: 1,024 connections (a few MiB of buffers at most), 10 s for
    /// the head, 16 KiB heads.
    pub fn public(request_timeout: Duration) -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            request_timeout,
        }
    }
}

/// Counts what the server refused (Prometheus counters, registered by the server's owner).
#[derive(Clone, Debug, Default)]
pub struct ServeCounters {
    /// Connections closed on accept because the cap was reached.
    pub over_capacity: Counter,
    /// Requests cut off by the request timeout.
    pub timed_out: Counter,
}

impl ServeCounters {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "connections_refused",
            "Connections closed on accept because the connection cap was reached",
            self.over_capacity.clone(),
        );
        registry.register(
            "requests_timed_out",
            "Requests not complete or not answered within the request timeout",
            self.timed_out.clone(),
        );
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then drains as described above.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    counters: ServeCounters,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            counters.over_capacity.inc();
            drop(stream);
            continue;
        };
        let app = app.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection(stream, app, limits, counters, shutdown).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Counts a connection's requests from a complete head until the response body is sent.
struct RequestGuard(Arc<AtomicUsize>);

impl RequestGuard {
    fn enter(in_progress: &Arc<AtomicUsize>) -> Self {
        in_progress.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(in_progress))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: ServeLimits,
    counters: ServeCounters,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_progress = Arc::new(AtomicUsize::new(0));
    let service = {
        let in_progress = Arc::clone(&in_progress);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = RequestGuard::enter(&in_progress);
            let app = app.clone();
            let counters = counters.clone();
            async move {
                let response = match tokio::time::timeout(
                    limits.request_timeout,
                    app.oneshot(request.map(Body::new)),
                )
                .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        counters.timed_out.inc();
                        timed_out()
                    }
                };
                // The request counts as in progress until its body has been sent.
                let (parts, body) = response.into_parts();
                let body = body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                });
                Ok::<_, Infallible>(Response::from_parts(parts, Body::new(body)))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's smallest buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    // Shutting down: no further requests on this connection. One in progress finishes (and its
    // response is sent); a connection that has not sent a complete head is dropped now.
    conn.as_mut().graceful_shutdown();
    if in_progress.load(Ordering::SeqCst) > 0 {
        // hyper closes the connection once this response is sent; the request timeout bounds it.
        let _ = conn.await;
    }
}

fn timed_out() -> Response<Body> {
    crate::relay::problem::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Request timed out",
        "the request was not complete or not answered in time; if it was a notification, retry with the same idempotency key",
    )
}
