//! What a reconcile reads before it knows it needs it: the credentials, token and caller
//! Secrets, read together and while the finalizer is written, instead of one after another after
//! it.

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::{Api, ResourceExt};

use crate::api::LineWorksNotifier;
use crate::api::contract::caller_secret;

/// The Secrets as read at the start of a reconcile that will check (`None`: not read, or the
/// read failed).
#[derive(Default)]
pub struct Prefetched {
    pub credentials: Option<Option<Secret>>,
    pub token_secret: Option<Option<Secret>>,
    /// The caller Secret's metadata (its token is never read here).
    pub caller_secret: Option<Option<PartialObjectMeta<Secret>>>,
}

impl Prefetched {
    /// The three Secrets at once, for a notifier that will be checked (not deleted, not suspended).
    /// A failed read is left to the step that needs it, which reads again and reports it.
    pub async fn read(secrets: &Api<Secret>, notifier: &LineWorksNotifier) -> Self {
        if notifier.metadata.deletion_timestamp.is_some() || notifier.spec.suspend {
            return Self::default();
        }
        let token_secret_name = notifier.token_secret_name();
        let caller_secret_name = caller_secret::name(&notifier.name_any());
        let (credentials, token_secret, caller_secret) = tokio::join!(
            secrets.get_opt(&notifier.spec.auth.credentials_secret_ref.name),
            secrets.get_opt(&token_secret_name),
            secrets.get_metadata_opt(&caller_secret_name),
        );
        Self {
            credentials: credentials.ok(),
            token_secret: token_secret.ok(),
            caller_secret: caller_secret.ok(),
        }
    }
}
