//! What the relay knows of the cluster: notifiers and their token Secrets, kept current by
//! watches, and the one write it makes there: asking the controller for a renewed token.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use lineworks_client::{ExposeSecret, SecretString, token_fingerprint};

use crate::api::LineWorksNotifier;
use crate::api::contract::{self, REFRESH_REQUESTED_ANNOTATION, token_secret};

/// How often a waiting delivery looks at the Secret store again.
const POLL: Duration = Duration::from_millis(50);

/// Which objects the relay watches.
pub struct Scope {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Sidecar mode: exactly one notifier and its token Secret, watched by name so the pod's
    /// Role can name exactly the two objects it reads.
    pub notifier: Option<String>,
    pub token_secret: Option<String>,
}

pub struct Cache {
    client: Client,
    notifiers: Store<LineWorksNotifier>,
    secrets: Store<Secret>,
    /// How long to wait for a token to appear or be renewed.
    token_wait: Duration,
}

impl Cache {
    /// Starts the watches; the stores fill in the background (see [`Cache::synced`]).
    pub fn start(client: Client, scope: Scope, token_wait: Duration) -> Self {
        let (notifier_api, secret_api): (Api<LineWorksNotifier>, Api<Secret>) =
            match &scope.namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
        let mut notifier_config = watcher::Config::default();
        let mut secret_config = watcher::Config::default().labels(&contract::managed_selector());
        if let Some(name) = &scope.notifier {
            notifier_config = notifier_config.fields(&format!("metadata.name={name}"));
            let token_secret = scope
                .token_secret
                .clone()
                .unwrap_or_else(|| token_secret::default_name(name));
            secret_config = secret_config.fields(&format!("metadata.name={token_secret}"));
        }
        let (notifiers, notifier_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        tokio::spawn(
            reflector::reflector(notifier_writer, watcher(notifier_api, notifier_config))
                .default_backoff()
                .for_each(|_| async {}),
        );
        tokio::spawn(
            reflector::reflector(secret_writer, watcher(secret_api, secret_config))
                .default_backoff()
                .for_each(|_| async {}),
        );
        Self {
            client,
            notifiers,
            secrets,
            token_wait,
        }
    }

    /// Whether both watches have listed (before that every notifier would look unknown),
    /// waiting at most `wait`.
    pub async fn synced(&self, wait: Duration) -> bool {
        let listed = |ready: Result<Result<(), _>, _>| matches!(ready, Ok(Ok(())));
        listed(tokio::time::timeout(wait, self.notifiers.wait_until_ready()).await)
            && listed(tokio::time::timeout(wait, self.secrets.wait_until_ready()).await)
    }

    pub fn notifier(&self, ns: &str, name: &str) -> Option<Arc<LineWorksNotifier>> {
        self.notifiers.get(&ObjectRef::new(name).within(ns))
    }

    /// The access token the controller stored for `notifier`, if the watch has seen it. Only a
    /// Secret controlled by this very notifier (its UID) counts: one that merely carries the
    /// label and the name (created by anyone who may create Secrets) is ignored.
    pub fn token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        let ns = notifier.namespace()?;
        let secret = self
            .secrets
            .get(&ObjectRef::new(&notifier.token_secret_name()).within(&ns))
            .filter(|s| contract::controlled_by(&s.metadata, notifier.metadata.uid.as_deref()))?;
        let bytes = secret.data.as_ref()?.get(token_secret::ACCESS_TOKEN)?;
        String::from_utf8(bytes.0.clone())
            .ok()
            .map(SecretString::from)
    }

    /// The stored token, waiting (up to the token wait) while the Secret watch catches up.
    pub async fn current_token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        self.wait_for_token(notifier, |_| true).await
    }

    /// Asks the controller for a new token and waits until the Secret holds a different one.
    pub async fn renewed_token(
        &self,
        notifier: &LineWorksNotifier,
        rejected: &SecretString,
    ) -> Option<SecretString> {
        let ns = notifier.namespace()?;
        let api: Api<LineWorksNotifier> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {
            REFRESH_REQUESTED_ANNOTATION: token_fingerprint(rejected)
        }}});
        if let Err(e) = api
            .patch(
                &notifier.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(error = %e, "could not ask the controller for a new token");
            return None;
        }
        self.wait_for_token(notifier, |token| {
            token.expose_secret() != rejected.expose_secret()
        })
        .await
    }

    async fn wait_for_token(
        &self,
        notifier: &LineWorksNotifier,
        acceptable: impl Fn(&SecretString) -> bool,
    ) -> Option<SecretString> {
        let deadline = tokio::time::Instant::now() + self.token_wait;
        loop {
            if let Some(token) = self.token(notifier).filter(|t| acceptable(t)) {
                return Some(token);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
