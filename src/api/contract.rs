//! What the controller, the relay and the CLI agree on beyond the CRD's schema: labels,
//! annotations, the token Secret's name and keys, and default texts. One definition each, so the
//! components cannot drift apart and none has to import another to learn them.

/// Label on every object the operator creates (token Secrets, the state-key Secret), so watches
/// can select exactly those.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "lineworks-operator";
/// Label naming the notifier a token Secret belongs to.
pub const NOTIFIER_LABEL: &str = "lineworks-operator.dev/notifier";

/// Label selector matching the objects the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Whether an object (a token Secret) is controlled by the notifier with this UID: the one proof
/// that the controller wrote it for that notifier. A name and a label can be forged by anyone
/// who may create Secrets in the namespace; an ownerReference to a UID cannot be guessed.
pub fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: Option<&str>,
) -> bool {
    owner_uid.is_some_and(|uid| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    })
}

/// How the relay asks the controller for a new token: a core/v1 Event on the notifier, so the
/// relay needs only `create` on Events, never a write on a notifier (which could rewrite its
/// spec). The controller watches Events with [`token_rejected::field_selector`] and acts on one
/// only if its fingerprint is that of the token it stored, so a forged Event can at most ask for
/// a renewal the renewal floor allows anyway.
pub mod token_rejected {
    /// The Event's reason; also what `kubectl describe` shows.
    pub const REASON: &str = "AccessTokenRejected";
    /// Annotation on the Event: the
    /// [`token_fingerprint`](lineworks_client::token_fingerprint) of the token LINE WORKS
    /// rejected (a hash prefix, never the token).
    pub const FINGERPRINT_ANNOTATION: &str = "lineworks-operator.dev/rejected-token";
    /// Who writes it (the Event's source and reporting component).
    pub const COMPONENT: &str = "lineworks-operator-relay";

    use crate::api::LineWorksNotifier;
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::{Resource, ResourceExt};

    /// One Event per notifier and rejected token: relay replicas seeing the same rejection
    /// create the same object, and the first one wins (the others get AlreadyExists).
    pub fn event_name(notifier: &str, fingerprint: &str) -> String {
        // Event names are DNS subdomains (at most 253 characters).
        let head: String = notifier.chars().take(200).collect();
        format!("{head}.token-rejected.{fingerprint}")
    }

    /// The Events the controller watches.
    pub fn field_selector() -> String {
        format!("involvedObject.kind=LineWorksNotifier,reason={REASON}")
    }

    /// The Event asking the controller to renew the token with `fingerprint`, written by relay
    /// `instance`; it shows in `kubectl describe` as a Warning on the notifier.
    pub fn event(
        notifier: &crate::api::LineWorksNotifier,
        fingerprint: String,
        instance: &str,
    ) -> Event {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&notifier.name_any(), &fingerprint)),
                namespace: notifier.namespace(),
                annotations: Some([(FINGERPRINT_ANNOTATION.to_string(), fingerprint)].into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(LineWorksNotifier::api_version(&()).into_owned()),
                kind: Some(LineWorksNotifier::kind(&()).into_owned()),
                name: Some(notifier.name_any()),
                namespace: notifier.namespace(),
                uid: notifier.metadata.uid.clone(),
                ..Default::default()
            },
            reason: Some(REASON.into()),
            type_: Some("Warning".into()),
            message: Some(
                "LINE WORKS rejected the stored access token; the relay asked the controller for a new one"
                    .into(),
            ),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(instance.chars().take(128).collect()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        }
    }
}
/// Annotation on a notifier that asks for a re-check now (any new value, e.g. a timestamp), the
/// way Flux's `reconcile.fluxcd.io/requestedAt` does: after a fix in LINE WORKS, instead of
/// waiting out the backoff (up to 5 minutes) or the daily re-check. A value not yet in
/// `status.lastHandledReconcileAt` re-runs the bot checks even if they passed (a pass is
/// otherwise trusted until the next token renewal, about daily).
/// Other metadata changes do not wake the controller: it acts on the spec, this annotation, the
/// relay's refresh request (an Event, see [`token_rejected`]) and deletion.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "lineworks-operator.dev/reconcile-requested-at";
/// Annotation `<holder> <unix millis>` on a token Secret while a refresh is in flight.
pub const REFRESH_CLAIM_ANNOTATION: &str = "lineworks-operator.dev/refresh-in-flight";
/// Annotation by which a Secret's owners let notifiers of its namespace use it for credentials:
/// notifier names separated by commas, or `*` for every notifier in the namespace. Without it the
/// controller reads no value from the Secret, so a notifier cannot turn an unrelated Secret (a
/// database password, another app's key) into a client ID shown in status or a value sent away.
pub const ALLOWED_NOTIFIERS_ANNOTATION: &str = "lineworks-operator.dev/allowed-notifiers";

/// Whether a Secret annotated with [`ALLOWED_NOTIFIERS_ANNOTATION`] = `allowed` lets `notifier`
/// use it.
pub fn secret_allows(allowed: Option<&str>, notifier: &str) -> bool {
    allowed.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|name| name == "*" || name == notifier)
    })
}

/// Finalizer that revokes a notifier's tokens before it goes.
pub const REVOKE_FINALIZER: &str = "lineworks-operator.dev/revoke-tokens";

/// The token Secret: its default name and its keys.
pub mod token_secret {
    /// Default name of a notifier's token Secret (`spec.auth.tokenSecretName` overrides it).
    pub fn default_name(notifier: &str) -> String {
        format!("{notifier}-lineworks-token")
    }

    pub const ACCESS_TOKEN: &str = "accessToken";
    pub const REFRESH_TOKEN: &str = "refreshToken";
    pub const TOKEN_TYPE: &str = "tokenType";
    pub const SCOPE: &str = "scope";
    /// Unix seconds.
    pub const ISSUED_AT: &str = "issuedAt";
    /// Unix seconds.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// Unix seconds: when the stored refresh token was issued (a refresh that answers no new
    /// refresh token keeps it), so its 90 days are known after any number of access renewals.
    pub const REFRESH_TOKEN_ISSUED_AT: &str = "refreshTokenIssuedAt";
    /// SHA-256 prefix of the credentials the tokens were obtained with.
    pub const CREDENTIALS_FINGERPRINT: &str = "credentialsFingerprint";
    /// The scopes asked for when the tokens were obtained, sorted, space-separated.
    pub const REQUESTED_SCOPES: &str = "requestedScopes";
    /// userAccount: LINE WORKS's OAuth error code when the last authorization failed at the
    /// callback, and the credentials fingerprint it failed with: `<code> <fingerprint>`.
    pub const AUTHORIZATION_FAILURE: &str = "authorizationFailure";
    /// userAccount: the `state` of the authorization URL being offered.
    pub const AUTHORIZATION_STATE: &str = "authorizationState";
}

/// The Secret holding a notifier's caller token: what a caller must present to the Deployment
/// relay to send through that notifier (and through no other). The controller generates it,
/// owned by the notifier, in the notifier's namespace, so the people who may read Secrets there
/// (the notifier's owners) hand it to their reception app; deleting it makes a new one.
pub mod caller_secret {
    /// `<notifier>-relay-caller`.
    pub fn name(notifier: &str) -> String {
        format!("{notifier}-relay-caller")
    }

    /// The key holding the token.
    pub const TOKEN: &str = "token";
}

/// Text of the test notification unless `spec.templates.test` says otherwise (the wording of the
/// console's テスト通知 in the vendor's manual).
pub const DEFAULT_TEST_TEXT: &str = "LINE WORKS テスト通知";

/// Public LINE WORKS API 2.0 base URL, used when `spec.apiBaseURL` is not set.
pub const DEFAULT_API_BASE_URL: &str = lineworks_client::PUBLIC_API_BASE_URL;
/// Public LINE WORKS OAuth base URL, used when `spec.authBaseURL` is not set.
pub const DEFAULT_AUTH_BASE_URL: &str = lineworks_client::PUBLIC_AUTH_BASE_URL;

#[cfg(test)]
mod tests {
    use super::secret_allows;

    #[test]
    fn a_secret_is_usable_only_by_the_notifiers_it_names() {
        assert!(!secret_allows(None, "front-desk"));
        assert!(!secret_allows(Some(""), "front-desk"));
        assert!(!secret_allows(Some("front-desk-2"), "front-desk"));
        assert!(!secret_allows(Some("front"), "front-desk"));
        assert!(secret_allows(Some("lobby, front-desk"), "front-desk"));
        assert!(secret_allows(Some("*"), "front-desk"));
    }
}
