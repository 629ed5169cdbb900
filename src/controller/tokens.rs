//! The token Secret of a notifier: the only place tokens live. Written only by the controller,
//! with optimistic concurrency (create, or replace at the resourceVersion that was read), owned by
//! the notifier and labelled as managed, so the relay can watch just these Secrets.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};

use crate::api::LineWorksNotifier;
use crate::lineworks::{ExposeSecret, SecretString, TokenSet};

/// Label on every token Secret, for watches and for people.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "lineworks-operator";
/// Label naming the notifier a token Secret belongs to.
pub const NOTIFIER_LABEL: &str = "lineworks-operator.dev/notifier";

const ACCESS_TOKEN: &str = "accessToken";
const REFRESH_TOKEN: &str = "refreshToken";
const TOKEN_TYPE: &str = "tokenType";
const SCOPE: &str = "scope";
const ISSUED_AT: &str = "issuedAt";
const EXPIRES_AT: &str = "expiresAt";
const FINGERPRINT: &str = "credentialsFingerprint";

/// Tokens as stored, with the Secret's version for the next write.
pub struct Stored {
    pub tokens: TokenSet,
    pub fingerprint: String,
}

/// What the token Secret holds.
pub enum Found {
    /// No Secret yet.
    Nothing,
    /// A Secret of this notifier, with tokens if they are complete.
    Ours {
        stored: Option<Stored>,
        resource_version: Option<String>,
    },
    /// A Secret of that name that this notifier does not own.
    Foreign,
}

/// When a token should be renewed: after three quarters of its lifetime, so 1-hour tokens renew
/// at 45 minutes and 24-hour tokens at 18 hours, and the refresh token is used (kept alive) daily.
pub fn renew_at(tokens: &TokenSet) -> SystemTime {
    tokens.issued_at + tokens.expires_in.mul_f64(0.75)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub async fn read(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
) -> Result<Found, kube::Error> {
    let Some(secret) = secrets.get_opt(&notifier.token_secret_name()).await? else {
        return Ok(Found::Nothing);
    };
    let uid = notifier.uid().unwrap_or_default();
    let owned = secret
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true));
    if !owned {
        return Ok(Found::Foreign);
    }
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    let number = |key: &str| text(key).and_then(|s| s.parse::<u64>().ok());
    let stored = match (text(ACCESS_TOKEN), number(ISSUED_AT), number(EXPIRES_AT)) {
        (Some(access), Some(issued), Some(expires)) if expires > issued => Some(Stored {
            tokens: TokenSet {
                access_token: SecretString::from(access),
                refresh_token: text(REFRESH_TOKEN).map(SecretString::from),
                token_type: text(TOKEN_TYPE).unwrap_or_else(|| "Bearer".into()),
                scope: text(SCOPE).unwrap_or_default(),
                issued_at: UNIX_EPOCH + Duration::from_secs(issued),
                expires_in: Duration::from_secs(expires - issued),
            },
            fingerprint: text(FINGERPRINT).unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Found::Ours {
        stored,
        resource_version: secret.resource_version(),
    })
}

/// Writes the tokens; fails with a 409 if someone else wrote since `resource_version` was read.
pub async fn write(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    tokens: &TokenSet,
    fingerprint: &str,
    resource_version: Option<String>,
) -> Result<(), kube::Error> {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put(ACCESS_TOKEN, tokens.access_token.expose_secret());
    if let Some(refresh) = &tokens.refresh_token {
        put(REFRESH_TOKEN, refresh.expose_secret());
    }
    put(TOKEN_TYPE, &tokens.token_type);
    put(SCOPE, &tokens.scope);
    put(ISSUED_AT, &unix(tokens.issued_at).to_string());
    put(EXPIRES_AT, &unix(tokens.expires_at()).to_string());
    put(FINGERPRINT, fingerprint);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(notifier.token_secret_name()),
            namespace: notifier.namespace(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (NOTIFIER_LABEL.to_string(), notifier.name_any()),
            ])),
            owner_references: notifier.controller_owner_ref(&()).map(|o| vec![o]),
            resource_version: resource_version.clone(),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match resource_version {
        None => secrets.create(&params, &secret).await.map(|_| ()),
        Some(_) => secrets
            .replace(&notifier.token_secret_name(), &params, &secret)
            .await
            .map(|_| ()),
    }
}
