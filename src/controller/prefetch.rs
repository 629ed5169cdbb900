//! What a reconcile reads before it knows it needs it: the credentials and token Secrets, read
//! together and while the finalizer is written, instead of one after another after it.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::LineWorksNotifier;

/// The credentials and token Secrets as read at the start of a reconcile that will check.
#[derive(Default)]
pub struct Prefetched {
    pub credentials: Option<Option<Secret>>,
    pub token_secret: Option<Option<Secret>>,
}

impl Prefetched {
    /// Both Secrets at once, for a notifier that will be checked (not deleted, not suspended).
    /// A failed read is left to the step that needs it, which reads again and reports it.
    pub async fn read(secrets: &Api<Secret>, notifier: &LineWorksNotifier) -> Self {
        if notifier.metadata.deletion_timestamp.is_some() || notifier.spec.suspend {
            return Self::default();
        }
        let token_secret_name = notifier.token_secret_name();
        let (credentials, token_secret) = tokio::join!(
            secrets.get_opt(&notifier.spec.auth.credentials_secret_ref.name),
            secrets.get_opt(&token_secret_name),
        );
        Self {
            credentials: credentials.ok(),
            token_secret: token_secret.ok(),
        }
    }
}
