//! The app's credentials, read from the Secret a notifier names. Missing Secrets and keys become
//! verdicts that say which Secret and key to create; the values never leave this module except as
//! secret types.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::Reason;
use crate::api::contract::{ALLOWED_NOTIFIERS_ANNOTATION, secret_allows};
use crate::api::{AuthMode, LineWorksNotifier};
use lineworks_client::{ClientCredentials, ExposeSecret, SecretString, ServiceAccount};

/// What the credentials Secret provides for a notifier.
pub struct Credentials {
    pub client: ClientCredentials,
    /// Set in serviceAccount mode.
    pub service_account: Option<ServiceAccount>,
    /// Changes whenever any credential value changes; tokens issued under another fingerprint are
    /// not reused.
    pub fingerprint: String,
}

/// Reads and checks the credentials. `Err` is either an Authorized=False verdict or an API error.
pub async fn load(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
) -> Result<Result<Credentials, Verdict>, kube::Error> {
    let found = secrets
        .get_opt(&notifier.spec.auth.credentials_secret_ref.name)
        .await?;
    Ok(check(found, notifier))
}

/// Checks the credentials Secret `found` (as read under the notifier's reference).
pub fn check(found: Option<Secret>, notifier: &LineWorksNotifier) -> Result<Credentials, Verdict> {
    let reference = &notifier.spec.auth.credentials_secret_ref;
    let Some(secret) = found else {
        return Err(unauthorized(
            Reason::CredentialsSecretMissing,
            format!(
                "Secret {} not found in this namespace: create it with keys {} and {} from LINE WORKS Developer Console > API 2.0 > (app){}",
                reference.name,
                reference.client_id_key,
                reference.client_secret_key,
                match notifier.spec.auth.mode {
                    AuthMode::ServiceAccount => format!(
                        ", plus {} and {} (Service Account)",
                        reference.service_account_id_key, reference.private_key_key
                    ),
                    AuthMode::UserAccount => String::new(),
                }
            ),
        ));
    };
    let allowed = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOWED_NOTIFIERS_ANNOTATION));
    let name = notifier.metadata.name.as_deref().unwrap_or_default();
    if !secret_allows(allowed.map(String::as_str), name) {
        // Checked before any value is read: nothing from a Secret that has not opted in reaches
        // LINE WORKS, status or events.
        return Err(unauthorized(
            Reason::CredentialsSecretNotAllowed,
            format!(
                "Secret {} does not allow notifier {name} to use it: if it holds this app's credentials, annotate it with {ALLOWED_NOTIFIERS_ANNOTATION}={name} (notifier names separated by commas, or * for every notifier in this namespace)",
                reference.name
            ),
        ));
    }
    let value = |key: &str| -> Option<SecretString> {
        let bytes = secret.data.as_ref()?.get(key)?;
        let text = String::from_utf8(bytes.0.clone()).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| SecretString::from(text.to_string()))
    };
    let mut wanted = vec![
        reference.client_id_key.as_str(),
        reference.client_secret_key.as_str(),
    ];
    let sa_id_in_spec = notifier
        .spec
        .auth
        .service_account
        .as_ref()
        .and_then(|s| s.service_account_id.clone());
    if notifier.spec.auth.mode == AuthMode::ServiceAccount {
        if sa_id_in_spec.is_none() {
            wanted.push(&reference.service_account_id_key);
        }
        wanted.push(&reference.private_key_key);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|k| value(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(unauthorized(
            Reason::CredentialsKeyMissing,
            format!(
                "Secret {} has no (or an empty) {}: add {} from LINE WORKS Developer Console > API 2.0 > (app)",
                reference.name,
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    let (Some(client_id), Some(client_secret)) = (
        value(&reference.client_id_key),
        value(&reference.client_secret_key),
    ) else {
        return Err(unauthorized(
            Reason::CredentialsKeyMissing,
            "credentials vanished while reading",
        ));
    };
    let mut hash = Sha256::new();
    for part in [client_id.expose_secret(), client_secret.expose_secret()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let service_account = match notifier.spec.auth.mode {
        AuthMode::UserAccount => None,
        AuthMode::ServiceAccount => {
            let id = sa_id_in_spec
                .or_else(|| {
                    value(&reference.service_account_id_key).map(|s| s.expose_secret().to_string())
                })
                .unwrap_or_default();
            let Some(key) = value(&reference.private_key_key) else {
                return Err(unauthorized(
                    Reason::CredentialsKeyMissing,
                    "private key vanished while reading",
                ));
            };
            hash.update(id.as_bytes());
            hash.update([0]);
            hash.update(key.expose_secret().as_bytes());
            match ServiceAccount::new(id, &key) {
                Ok(account) => Some(account),
                Err(e) => {
                    return Err(unauthorized(
                        Reason::PrivateKeyInvalid,
                        format!(
                            "key {} of Secret {}: {e}; store the whole key file, or (LINE WORKS offers no second download) issue a new key in Developer Console > API 2.0 > (app) > Service Account > Private Key (再発行) and store that",
                            reference.private_key_key, reference.name
                        ),
                    ));
                }
            }
        }
    };
    let digest = hash.finalize();
    Ok(Credentials {
        client: ClientCredentials {
            client_id: client_id.expose_secret().to_string(),
            client_secret,
        },
        service_account,
        fingerprint: digest.iter().take(16).map(|b| format!("{b:02x}")).collect(),
    })
}
