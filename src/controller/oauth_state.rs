//! The `state` of a userAccount authorization URL: a short JWT (HS256) naming the notifier (by
//! namespace, name and UID) with a random nonce and an expiry, signed with a key every replica
//! shares through a Secret. The signature proves the operator issued it, the expiry bounds how
//! long a leaked URL is worth anything, the UID rejects a notifier deleted and recreated under the
//! same name, and the nonce (also kept in the token Secret and removed on use) makes it single use.

use lineworks_client::unix_seconds;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::api::LineWorksNotifier;

/// How long an authorization URL works.
pub const DEFAULT_STATE_LIFETIME: Duration = Duration::from_secs(3600);
const AUDIENCE: &str = "lineworks-operator/oauth-state";
const KEY_FIELD: &str = "key";

/// The signing key (never printed).
#[derive(Clone)]
pub struct StateKey(Vec<u8>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

/// Where the shared key lives.
#[derive(Clone, Debug)]
pub struct StateKeySecret {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    #[error("cannot read or create the OAuth state key Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} has no usable key (data.{KEY_FIELD}, 32 bytes or more)")]
    Unusable { namespace: String, name: String },
}

impl StateKey {
    /// A random key for this process only (tests, or a single replica that may not write Secrets).
    pub fn ephemeral() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    /// Reads the shared key, creating it with 32 random bytes if it does not exist yet.
    pub async fn load_or_create(
        client: Client,
        at: &StateKeySecret,
    ) -> Result<Self, StateKeyError> {
        let secrets: Api<Secret> = Api::namespaced(client, &at.namespace);
        let kube_err = |source| StateKeyError::Kube {
            namespace: at.namespace.clone(),
            name: at.name.clone(),
            source,
        };
        for _ in 0..3 {
            if let Some(secret) = secrets.get_opt(&at.name).await.map_err(kube_err)? {
                let key = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KEY_FIELD))
                    .map(|b| b.0.clone())
                    .filter(|k| k.len() >= 32)
                    .ok_or_else(|| StateKeyError::Unusable {
                        namespace: at.namespace.clone(),
                        name: at.name.clone(),
                    })?;
                return Ok(Self(key));
            }
            let key = Self::ephemeral();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(at.name.clone()),
                    labels: Some(BTreeMap::from([(
                        crate::api::contract::MANAGED_BY_LABEL.to_string(),
                        crate::api::contract::MANAGED_BY.to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    KEY_FIELD.to_string(),
                    ByteString(key.0.clone()),
                )])),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(key),
                // Another replica created it meanwhile: read theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(kube_err(e)),
            }
        }
        Err(StateKeyError::Unusable {
            namespace: at.namespace.clone(),
            name: at.name.clone(),
        })
    }

    /// Issues a state for this notifier, valid for `lifetime`.
    pub fn mint(&self, notifier: &LineWorksNotifier, lifetime: Duration) -> Minted {
        let now = unix_seconds(SystemTime::now());
        let claims = StateClaims {
            aud: AUDIENCE.into(),
            ns: notifier.namespace().unwrap_or_default(),
            name: notifier.name_any(),
            uid: notifier.uid().unwrap_or_default(),
            nonce: hex(&rand::random::<[u8; 16]>()),
            iat: now,
            exp: now + lifetime.as_secs().max(1),
        };
        // HS256 over a fixed, valid key cannot fail; an empty string would only yield a URL the
        // callback rejects.
        lineworks_client::install_crypto_provider();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.0),
        )
        .unwrap_or_default();
        Minted {
            token,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        }
    }

    /// Checks signature, audience and expiry; the caller checks the notifier and the nonce.
    pub fn verify(&self, state: &str) -> Result<StateClaims, StateRejected> {
        lineworks_client::install_crypto_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<StateClaims>(state, &DecodingKey::from_secret(&self.0), &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => StateRejected::Expired,
                _ => StateRejected::NotIssuedHere,
            })
    }
}

/// An issued state.
pub struct Minted {
    pub token: String,
    pub expires_at: SystemTime,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct StateClaims {
    aud: String,
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub nonce: String,
    pub iat: u64,
    pub exp: u64,
}

impl StateClaims {
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a callback's `state` was refused; each says what the person should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRejected {
    #[error(
        "the state parameter was not issued by this operator (altered, or from another installation)"
    )]
    NotIssuedHere,
    #[error("the authorization link expired")]
    Expired,
    #[error("this authorization link was already used, or a newer one replaced it")]
    AlreadyUsed,
    #[error("the notifier {0} no longer exists (or was recreated)")]
    NotifierGone(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier() -> LineWorksNotifier {
        let mut n: LineWorksNotifier = serde_json::from_value(serde_json::json!({
            "apiVersion": "lineworks-operator.dev/v1alpha1",
            "kind": "LineWorksNotifier",
            "metadata": {"name": "front", "namespace": "reception", "uid": "u-1"},
            "spec": {"botId": 1, "domain": "d", "defaultUser": "u",
                     "auth": {"mode": "userAccount", "credentialsSecretRef": {"name": "c"},
                              "userAccount": {"redirectURL": "https://x/cb"}}}
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"));
        n.metadata.uid = Some("u-1".into());
        n
    }

    #[test]
    fn a_minted_state_verifies_and_names_the_notifier() {
        let key = StateKey::ephemeral();
        let minted = key.mint(&notifier(), Duration::from_secs(60));
        let claims = key.verify(&minted.token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                claims.ns.as_str(),
                claims.name.as_str(),
                claims.uid.as_str()
            ),
            ("reception", "front", "u-1")
        );
        assert_eq!(claims.nonce.len(), 32);
    }

    #[test]
    fn another_key_or_an_edit_is_not_issued_here() {
        let key = StateKey::ephemeral();
        let minted = key.mint(&notifier(), Duration::from_secs(60));
        assert_eq!(
            StateKey::ephemeral().verify(&minted.token),
            Err(StateRejected::NotIssuedHere)
        );
        let mut edited = minted.token.clone();
        edited.insert(10, 'x');
        assert_eq!(key.verify(&edited), Err(StateRejected::NotIssuedHere));
        assert_eq!(key.verify("ns/name"), Err(StateRejected::NotIssuedHere));
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.0)));
    }
}
