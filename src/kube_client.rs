//! The Kubernetes client: kube's own stack (base URL, retries of 429/503/504, credentials,
//! extra headers, connect/read/write timeouts, rustls), with two changes to its connections.
//! HTTP/2 when the API server offers it (ALPN), as client-go uses: kube's builder speaks
//! HTTP/1.1 only, so every request in flight held a TLS connection of its own (a heap profile of
//! 1,000 new notifiers showed about 1,400 connections and 40 MiB of their buffers at the peak).
//! And TCP_NODELAY: kube's builder leaves Nagle's algorithm on, so a request written in more than
//! one segment can wait for the server's delayed ACK (tens of milliseconds on Linux).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A client for `config` (HTTP/2 by ALPN, TCP_NODELAY); configurations this does not build the
/// way kube does (a proxy, an exec credential plugin, a TLS server name override) get kube's own
/// client.
pub fn build(config: Config) -> Result<Client, kube::Error> {
    let exec = config.auth_info.exec.is_some();
    if config.proxy_url.is_some() || exec || config.tls_server_name.is_some() {
        return Client::try_from(config);
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    let mut timed = hyper_timeout::TimeoutConnector::new(tls);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}

/// [`build`] for the environment's configuration (in-cluster, or the current kubeconfig).
pub async fn from_environment() -> Result<Client, kube::Error> {
    build(Config::infer().await.map_err(kube::Error::InferConfig)?)
}
