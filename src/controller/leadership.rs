//! Waiting for the leader Lease, and handing it over quickly.
//!
//! kube-lease-manager renews and takes the Lease, but a standby only looks again when the
//! holder's term would end (up to the lease duration), even when the holder released the Lease
//! on a graceful shutdown. So the standby also watches the Lease object: when it is released
//! (no holder), the standby starts a fresh manager, which takes a free Lease at once. A crashed
//! holder releases nothing; then the term runs out as before.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{LeaseOptions, StartError};

/// The leader flag and the manager's task, held for as long as this replica leads.
pub type Leadership = (
    watch::Receiver<bool>,
    JoinHandle<kube_lease_manager::Result<LeaseManager>>,
);

/// Waits until this replica holds the Lease (Some) or `stop` fires (None).
pub async fn acquire(
    client: &Client,
    lease: &LeaseOptions,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Leadership>, StartError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration_secs)
            .with_grace(lease.duration_secs.div_ceil(3).max(1))
            .build()
            .await
            .map_err(|e| StartError::Lease(e.to_string()))?;
        let (mut leader, task) = manager.watch().await;
        let released = released(&leases, &lease.name);
        tokio::pin!(released);
        loop {
            if *leader.borrow_and_update() {
                return Ok(Some((leader, task)));
            }
            tokio::select! {
                changed = leader.changed() => if changed.is_err() {
                    return Err(StartError::Lease("the lease manager stopped".into()));
                },
                () = &mut released => {
                    tracing::info!(lease = lease.name, "the leader released the lease; taking it");
                    break;
                }
                _ = stop.changed() => {
                    drop(leader);
                    let _ = task.await;
                    return Ok(None);
                }
            }
        }
        // Not holding anything: stopping this manager releases nothing.
        drop(leader);
        task.abort();
    }
}

/// Resolves when the Lease named `name` shows no holder after having had one (a release). A
/// watch error ends nothing: the manager's own schedule still applies.
async fn released(leases: &Api<Lease>, name: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(leases.clone(), config).default_backoff().boxed();
    let mut held = false;
    while let Some(event) = events.next().await {
        let lease = match event {
            Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => lease,
            _ => continue,
        };
        let holder = lease.spec.and_then(|s| s.holder_identity);
        match holder.as_deref() {
            Some(h) if !h.is_empty() => held = true,
            _ if held => return,
            _ => {}
        }
    }
    std::future::pending::<()>().await
}
