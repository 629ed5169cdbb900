//! `lineworks-operator controller`: reconciles `LineWorksNotifier` objects.
//!
//! Watches notifiers, the token Secrets they own (metadata only, by label) and the Secrets they
//! name for credentials (metadata only; a change re-reconciles exactly the notifiers naming it),
//! and the relay's token refresh requests (Events of one reason, selected by the API server).
//! Only the holder of the leader Lease reconciles; every replica serves `/healthz`, `/readyz` and
//! `/metrics`.

mod authorization;
mod bot_checks;
mod callback;
mod caller_token;
mod context;
pub(crate) mod credentials;
mod diagnosis;
mod findings;
mod leadership;
mod metrics;
mod notifier_gauges;
pub mod oauth_state;
mod own_writes;
mod prefetch;
mod progress;
mod reconcile;
mod refresh_requests;
mod revocation;
mod server;
mod status;
mod test_notification;
mod token_in_use;
pub(crate) mod tokens;
mod user_account;
mod verdict;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

pub use context::{Context, DEFAULT_MAX_CONCURRENT_RECONCILES, Settings};
pub use oauth_state::{StateKey, StateKeySecret};

/// Where the controller serves the OAuth callback unless told otherwise.
pub const DEFAULT_CALLBACK_PATH: &str = "/oauth/callback";
pub use metrics::{Metrics, Written};
pub use reconcile::ReconcileError;

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach Kubernetes (kubeconfig or in-cluster config): {0}")]
    Connect(#[source] kube::Error),
    #[error(
        "CustomResourceDefinition {0} is not installed: run `lineworks-operator crd | kubectl apply --server-side -f -` or install the Helm chart"
    )]
    CrdMissing(String),
    #[error("cannot read CustomResourceDefinition {name}: {source}")]
    CrdUnreadable {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot build the HTTP client for LINE WORKS: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    StateKey(#[from] oauth_state::StateKeyError),
    #[error("leader election failed: {0}")]
    Lease(String),
    #[error("lost the leader lease; exiting so a fresh replica can take over")]
    LostLease,
}

/// How to run the controller.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: Settings,
    /// Health and metrics address; None serves nothing.
    pub serve: Option<SocketAddr>,
    /// A listener already bound for that server, used instead of `serve` (tests bind first, so
    /// no other socket can take the port between choosing and binding it).
    pub serve_listener: Option<Arc<std::net::TcpListener>>,
    /// Lease used for leader election; None runs without (single replica).
    pub lease: Option<LeaseOptions>,
    /// Watch one namespace only (namespaced installs); None watches all.
    pub namespace: Option<String>,
    /// Where metrics go (tests read them); a fresh registry by default.
    pub metrics: Arc<Metrics>,
    /// The Secret holding the key that signs authorization `state`s, shared by all replicas
    /// (created if missing); None uses a key of this process only.
    pub state_key_secret: Option<StateKeySecret>,
    /// Path of the OAuth callback on the health and metrics server.
    pub callback_path: String,
}

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a lease is valid without renewal.
    pub duration_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            serve: None,
            serve_listener: None,
            lease: None,
            namespace: None,
            metrics: Arc::new(Metrics::default()),
            state_key_secret: None,
            callback_path: DEFAULT_CALLBACK_PATH.into(),
        }
    }
}

/// Runs against the default kubeconfig until SIGTERM/SIGINT.
pub async fn run(options: Options) -> Result<(), StartError> {
    let client = crate::kube_client::from_environment()
        .await
        .map_err(StartError::Connect)?;
    run_with(client, options, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs with `client` until `shutdown` completes; the entry point of tests.
pub async fn run_with(
    client: Client,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let crd_name = crate::api::LineWorksNotifier::crd_name();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(crd_name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(StartError::CrdMissing(crd_name.into())),
        Err(source) => {
            return Err(StartError::CrdUnreadable {
                name: crd_name.into(),
                source,
            });
        }
    }
    let metrics = Arc::clone(&options.metrics);
    let health = Arc::new(server::Health::default());
    let state_key = match &options.state_key_secret {
        Some(at) => StateKey::load_or_create(client.clone(), at).await?,
        None => StateKey::ephemeral(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        options.settings.clone(),
        Arc::clone(&metrics),
        state_key,
    )?);
    let listener = match (&options.serve_listener, options.serve) {
        (Some(bound), _) => {
            let addr = bound
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let serve_error = |source| StartError::Serve { addr, source };
            let own = bound.try_clone().map_err(serve_error)?;
            own.set_nonblocking(true).map_err(serve_error)?;
            Some(tokio::net::TcpListener::from_std(own).map_err(serve_error)?)
        }
        (None, Some(addr)) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Serve { addr, source })?,
        ),
        (None, None) => None,
    };
    if let Some(listener) = listener {
        tokio::spawn(server::serve(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&health),
            client.clone(),
            Some((options.callback_path.clone(), Arc::clone(&ctx))),
        ));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // Wait for leadership (or run at once without a lease).
    let mut lease_state = None;
    if let Some(lease) = &options.lease {
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            identity = lease.identity,
            lease = lease.name,
            "waiting for the leader lease"
        );
        let mut stop = stop_rx.clone();
        let Some(leadership) = leadership::acquire(&client, lease, &mut stop).await? else {
            return Ok(());
        };
        tracing::info!(identity = lease.identity, "became leader");
        lease_state = Some(leadership);
    }
    // From here this replica reconciles (with the lease, or alone without leader election).
    metrics.leader.set(1);

    let (notifiers, secrets, events): (
        Api<crate::api::LineWorksNotifier>,
        Api<PartialObjectMeta<Secret>>,
        Api<Event>,
    ) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        // Metadata only: the controller never caches Secret contents.
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // The store sees every change; reconciles are triggered only by what they act on, so the
    // controller's own status writes do not wake it again.
    let (reader, writer) = kube::runtime::reflector::store();
    let triggers = watcher(notifiers, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(crate::watch_trim::trim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(work_inputs, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, reader).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(options.settings.max_concurrent_reconciles),
    );
    let store = controller.store();
    let token_secrets = watcher(
        secrets.clone(),
        watcher::Config::default().labels(&crate::api::contract::managed_selector()),
    )
    .touched_objects();
    let credential_secrets = watcher(secrets, watcher::Config::default()).touched_objects();
    // The relay's refresh requests: Events of one reason on notifiers, selected by the server.
    let refresh_events = watcher(
        events,
        watcher::Config::default().fields(&crate::api::contract::token_rejected::field_selector()),
    )
    .applied_objects();
    let requests_store = store.clone();
    let requests_ctx = Arc::clone(&ctx);
    let lost_lease = Arc::new(AtomicBool::new(false));
    let stop_controller = {
        let mut stop = stop_rx.clone();
        let lost = Arc::clone(&lost_lease);
        let leader = lease_state.as_ref().map(|(rx, _)| rx.clone());
        async move {
            match leader {
                Some(mut leader) => loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        changed = leader.changed() => {
                            if changed.is_err() || !*leader.borrow_and_update() {
                                lost.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                },
                None => {
                    let _ = stop.changed().await;
                }
            }
        }
    };
    health.ready.store(true, Ordering::Relaxed);
    controller
        .owns_stream(token_secrets)
        .watches_stream(credential_secrets, move |secret| {
            // Exactly the notifiers in the Secret's namespace that name it for credentials.
            let ns = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|n| n.namespace() == ns && n.spec.auth.credentials_secret_ref.name == name)
                .map(|n| ObjectRef::from_obj(&*n))
                .collect::<Vec<_>>()
        })
        .watches_stream(refresh_events, move |event| {
            requests_ctx
                .refresh_requests
                .record(&event, &requests_store)
        })
        .graceful_shutdown_on(stop_controller)
        .run(reconcile::reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| {
            let metrics = Arc::clone(&metrics);
            async move {
                match result {
                    Ok(_) => {}
                    Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                        tracing::debug!(object = %r, "notifier deleted");
                        // Deleted without the finalizer's cleanup (removed by hand): its gauges go.
                        metrics
                            .notifiers
                            .forget(r.namespace.as_deref().unwrap_or_default(), &r.name);
                    }
                    Err(e) => tracing::warn!(error = %e, "reconcile failed"),
                }
            }
        })
        .await;
    metrics.leader.set(0);
    metrics.notifiers.forget_all();
    if let Some((leader, task)) = lease_state {
        // Dropping the receiver makes the manager release the lease so a standby takes over now.
        drop(leader);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if lost_lease.load(Ordering::Relaxed) {
        return Err(StartError::LostLease);
    }
    Ok(())
}

/// What a reconcile acts on: the spec (generation), a requested
/// reconcile, deletion and finalizers. Status and other metadata are left out: the controller
/// writes status itself, and its own writes must not wake it again.
fn work_inputs(notifier: &crate::api::LineWorksNotifier) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &notifier.metadata;
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut hash);
    meta.generation.hash(&mut hash);
    meta.deletion_timestamp.is_some().hash(&mut hash);
    meta.finalizers.hash(&mut hash);
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::contract::RECONCILE_REQUESTED_ANNOTATION))
        .hash(&mut hash);
    Some(hash.finish())
}

fn error_policy(
    notifier: Arc<crate::api::LineWorksNotifier>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = format!(
        "{}/{}",
        notifier.namespace().unwrap_or_default(),
        notifier.name_any()
    );
    let wait = ctx.backoff(&key);
    tracing::warn!(notifier = key, error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
