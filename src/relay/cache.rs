//! What the relay knows of the cluster: notifiers and their token Secrets, kept current by
//! watches, and the one write it makes there: asking the controller for a renewed token.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::PostParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use lineworks_client::{ExposeSecret, SecretString, token_fingerprint};

use crate::api::LineWorksNotifier;
use crate::api::contract::{self, token_rejected, token_secret};

/// How often a waiting delivery looks at the Secret store again.
const POLL: Duration = Duration::from_millis(50);

/// Which objects the relay watches.
pub struct Scope {
    /// The namespaces served, each watched on its own (so a namespaced Role per namespace
    /// suffices); empty = all.
    pub namespaces: Vec<String>,
    /// Sidecar mode: exactly one notifier and its token Secret, watched by name so the pod's
    /// Role can name exactly the two objects it reads.
    pub notifier: Option<String>,
    pub token_secret: Option<String>,
}

/// The notifiers and managed Secrets of one namespace (or of all).
struct Watched {
    namespace: Option<String>,
    notifiers: Store<LineWorksNotifier>,
    secrets: Store<Secret>,
}

pub struct Cache {
    client: Client,
    watched: Vec<Watched>,
    /// How long to wait for a token to appear or be renewed.
    token_wait: Duration,
}

impl Cache {
    /// Starts the watches; the stores fill in the background (see [`Cache::synced`]).
    pub fn start(client: Client, scope: Scope, token_wait: Duration) -> Self {
        let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
            vec![None]
        } else {
            scope.namespaces.iter().cloned().map(Some).collect()
        };
        let watched = namespaces
            .into_iter()
            .map(|namespace| watch(&client, namespace, &scope))
            .collect();
        Self {
            client,
            watched,
            token_wait,
        }
    }

    /// Whether every watch has listed (before that every notifier would look unknown),
    /// waiting at most `wait`.
    pub async fn synced(&self, wait: Duration) -> bool {
        let listed = |ready: Result<Result<(), _>, _>| matches!(ready, Ok(Ok(())));
        for w in &self.watched {
            if !(listed(tokio::time::timeout(wait, w.notifiers.wait_until_ready()).await)
                && listed(tokio::time::timeout(wait, w.secrets.wait_until_ready()).await))
            {
                return false;
            }
        }
        true
    }

    /// The watch covering `ns`, if the relay serves it.
    fn of(&self, ns: &str) -> Option<&Watched> {
        self.watched
            .iter()
            .find(|w| w.namespace.as_deref().is_none_or(|n| n == ns))
    }

    pub fn notifier(&self, ns: &str, name: &str) -> Option<Arc<LineWorksNotifier>> {
        self.of(ns)?.notifiers.get(&ObjectRef::new(name).within(ns))
    }

    /// A Secret named `name` next to `notifier` and controlled by it (its UID): the one proof
    /// that the controller wrote it for that notifier. One that merely carries the label and the
    /// name (created by anyone who may create Secrets) is ignored.
    fn owned_secret(&self, notifier: &LineWorksNotifier, name: &str) -> Option<Arc<Secret>> {
        let ns = notifier.metadata.namespace.as_deref()?;
        self.of(ns)?
            .secrets
            .get(&ObjectRef::new(name).within(ns))
            .filter(|s| contract::controlled_by(&s.metadata, notifier.metadata.uid.as_deref()))
    }

    /// The value under `key` of an owned Secret.
    fn owned_value(&self, notifier: &LineWorksNotifier, name: &str, key: &str) -> Option<String> {
        let secret = self.owned_secret(notifier, name)?;
        let bytes = secret.data.as_ref()?.get(key)?;
        String::from_utf8(bytes.0.clone()).ok()
    }

    /// The caller token the controller generated for `notifier` (see
    /// [`caller_secret`](contract::caller_secret)).
    pub fn caller_token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        self.owned_value(
            notifier,
            &contract::caller_secret::name(&notifier.name_any()),
            contract::caller_secret::TOKEN,
        )
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
    }

    /// The LINE WORKS app the stored tokens were obtained with (a fingerprint of its
    /// credentials), which keys the rate budget.
    pub fn app(&self, notifier: &LineWorksNotifier) -> Option<String> {
        self.owned_value(
            notifier,
            &notifier.token_secret_name(),
            token_secret::CREDENTIALS_FINGERPRINT,
        )
    }

    /// The access token the controller stored for `notifier`, if the watch has seen it (only
    /// from a Secret the notifier controls).
    pub fn token(&self, notifier: &LineWorksNotifier) -> Option<SecretString> {
        self.owned_value(
            notifier,
            &notifier.token_secret_name(),
            token_secret::ACCESS_TOKEN,
        )
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
        let events: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        match events
            .create(
                &PostParams::default(),
                &token_rejected::event(notifier, token_fingerprint(rejected), &instance()),
            )
            .await
        {
            Ok(_) => {}
            // Another replica (or an earlier attempt) reported this very token already.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the controller for a new token");
                return None;
            }
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

/// This relay, as named in the Events it writes: the pod name.
fn instance() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| token_rejected::COMPONENT.into())
}

/// Of a managed Secret, what the relay reads: its owner references and the access token, the
/// credentials fingerprint and the caller token. The refresh token (and the rest) never enters
/// the relay's memory, and a relay watching 10,000 notifiers holds a third of the bytes.
fn relay_view(secret: &mut Secret) {
    crate::watch_trim::trim(secret);
    // Selected by label on the server; nothing here reads labels or annotations.
    secret.metadata.labels = None;
    secret.metadata.annotations = None;
    if let Some(data) = secret.data.as_mut() {
        data.retain(|key, _| {
            [
                token_secret::ACCESS_TOKEN,
                token_secret::CREDENTIALS_FINGERPRINT,
                contract::caller_secret::TOKEN,
            ]
            .contains(&key.as_str())
        });
    }
    secret.string_data = None;
}

/// Of a notifier, what the relay reads: its metadata but labels and annotations, its spec, and
/// of its status the conditions and the generation they describe (10,000 notifiers: a relay
/// watching them all peaked at 106 MiB with whole objects).
fn relay_notifier_view(notifier: &mut LineWorksNotifier) {
    crate::watch_trim::trim(notifier);
    notifier.metadata.annotations = None;
    notifier.metadata.labels = None;
    if let Some(status) = notifier.status.take() {
        notifier.status = Some(crate::api::LineWorksNotifierStatus {
            observed_generation: status.observed_generation,
            conditions: status.conditions,
            ..Default::default()
        });
    }
}

/// Watches of one namespace (or all): notifiers, and the Secrets the operator manages.
fn watch(client: &Client, namespace: Option<String>, scope: &Scope) -> Watched {
    let (notifier_api, secret_api): (Api<LineWorksNotifier>, Api<Secret>) = match &namespace {
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
        reflector::reflector(
            notifier_writer,
            watcher(notifier_api, notifier_config).modify(relay_notifier_view),
        )
        .default_backoff()
        .for_each(|_| async {}),
    );
    tokio::spawn(
        reflector::reflector(
            secret_writer,
            watcher(secret_api, secret_config).modify(relay_view),
        )
        .default_backoff()
        .for_each(|_| async {}),
    );
    Watched {
        namespace,
        notifiers,
        secrets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn the_relay_keeps_no_refresh_token() {
        let mut secret = Secret {
            data: Some(
                [
                    token_secret::ACCESS_TOKEN,
                    token_secret::REFRESH_TOKEN,
                    token_secret::CREDENTIALS_FINGERPRINT,
                    token_secret::AUTHORIZATION_STATE,
                    contract::caller_secret::TOKEN,
                ]
                .iter()
                .map(|k| (k.to_string(), ByteString(b"v".to_vec())))
                .collect(),
            ),
            ..Default::default()
        };
        relay_view(&mut secret);
        let kept: Vec<String> = secret.data.unwrap_or_default().into_keys().collect();
        assert_eq!(
            kept,
            [
                token_secret::ACCESS_TOKEN,
                token_secret::CREDENTIALS_FINGERPRINT,
                contract::caller_secret::TOKEN
            ]
        );
    }
}
