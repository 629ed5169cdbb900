//! `lineworks-operator controller`: reconciles `LineWorksNotifier` objects.
//!
//! This first cut connects, refuses to start without the CRD (saying how to install it), and
//! watches notifiers; token handling, checks and conditions build on it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt, ResourceExt};

use crate::api::LineWorksNotifier;

/// Errors that stop the controller from starting.
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
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {}

struct Context;

/// Runs the controller until the process is asked to stop.
pub async fn run() -> Result<(), StartError> {
    let client = Client::try_default().await.map_err(StartError::Connect)?;
    let crd_name = LineWorksNotifier::crd_name();
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
    let notifiers: Api<LineWorksNotifier> = Api::all(client);
    tracing::info!("watching LineWorksNotifier objects in all namespaces");
    Controller::new(notifiers, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(Context))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    Ok(())
}

async fn reconcile(
    notifier: Arc<LineWorksNotifier>,
    _ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    tracing::info!(
        namespace = notifier.namespace().unwrap_or_default(),
        name = notifier.name_any(),
        generation = notifier.metadata.generation,
        "notifier observed"
    );
    Ok(Action::await_change())
}

fn error_policy(
    _notifier: Arc<LineWorksNotifier>,
    _error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    Action::requeue(Duration::from_secs(30))
}
