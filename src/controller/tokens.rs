//! The token Secret of a notifier: the only place tokens live. Three writers exist: the
//! reconciling controller (the Lease holder), the OAuth callback of any controller replica, and
//! the CLI's `authorize --listen` with the caller's kubeconfig. Every write is optimistic (create,
//! or replace at the resourceVersion that was read), so two writers conflict (409) instead of one
//! silently overwriting the other. The Secret is owned by the notifier and labelled as managed,
//! so the relay can watch just these Secrets; the relay only reads it.
//!
//! Besides tokens it holds two pieces of userAccount bookkeeping: the pending authorization
//! `state` (single use: the callback removes it with a compare-and-swap before exchanging the
//! code) and the refresh claim, an annotation written (compare-and-swap) before a refresh is sent
//! and removed with the new tokens. The claim makes a refresh single-flight across processes and
//! tells a successor that a predecessor died with a refresh in flight.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::reconcile::{ReconcileError, kube_err};
use crate::api::LineWorksNotifier;
use lineworks_client::{ExposeSecret, SecretString, TokenSet, unix_seconds};

use crate::api::contract::token_secret::{
    ACCESS_TOKEN, AUTHORIZATION_FAILURE, AUTHORIZATION_STATE,
    CREDENTIALS_FINGERPRINT as FINGERPRINT, EXPIRES_AT, ISSUED_AT, REFRESH_TOKEN,
    REFRESH_TOKEN_ISSUED_AT, REQUESTED_SCOPES, SCOPE, TOKEN_TYPE,
};
use crate::api::contract::{
    MANAGED_BY, MANAGED_BY_LABEL, NOTIFIER_LABEL, REFRESH_CLAIM_ANNOTATION, controlled_by,
};

/// Why the last authorization failed at the callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationFailure {
    /// LINE WORKS's OAuth error code, e.g. invalid_client or access_denied.
    pub code: String,
    /// Fingerprint of the credentials it failed with: once they change, the record is stale.
    pub fingerprint: String,
}

/// A refresh some process started and has not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshClaim {
    pub holder: String,
    pub since: SystemTime,
}

impl RefreshClaim {
    fn parse(value: &str) -> Option<Self> {
        let (holder, millis) = value.rsplit_once(' ')?;
        let millis = millis.parse::<u64>().ok()?;
        Some(Self {
            holder: holder.to_string(),
            since: UNIX_EPOCH + Duration::from_millis(millis),
        })
    }

    fn render(&self) -> String {
        let millis = self
            .since
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("{} {millis}", self.holder)
    }
}

/// Tokens as stored, and what they were obtained with.
pub struct Stored {
    pub tokens: TokenSet,
    /// Fingerprint of the credentials.
    pub fingerprint: String,
    /// The scopes asked for (see [`scope_key`]); absent in Secrets written before it was kept.
    pub requested_scopes: Option<String>,
    /// When the refresh token was issued; absent without one, or in Secrets written before it
    /// was kept.
    pub refresh_issued_at: Option<SystemTime>,
}

impl Stored {
    /// Whether these tokens were obtained with these credentials for these scopes: otherwise a
    /// new token is needed (a changed spec.auth.scopes must take effect, not be ignored).
    pub fn obtained_with(&self, fingerprint: &str, scopes: &[String]) -> bool {
        self.fingerprint == fingerprint
            && self
                .requested_scopes
                .as_deref()
                .is_none_or(|s| s == scope_key(scopes))
    }
}

/// Scopes in a comparable form: sorted, without duplicates, space-separated.
pub fn scope_key(scopes: &[String]) -> String {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(" ")
}

/// What the token Secret holds.
pub enum Found {
    /// No Secret yet.
    Nothing,
    /// A Secret of this notifier, with tokens if they are complete.
    Ours {
        stored: Option<Box<Stored>>,
        /// The `state` of the authorization URL being offered, if any.
        pending_state: Option<String>,
        refresh_claim: Option<RefreshClaim>,
        /// The last authorization that failed at the callback, if any since the last tokens.
        authorization_failure: Option<AuthorizationFailure>,
        /// The Secret as read, for compare-and-swap edits.
        secret: Box<Secret>,
    },
    /// A Secret of that name that this notifier does not own.
    Foreign,
}

/// When a token should be renewed: after three quarters of its lifetime, so 1-hour tokens renew
/// at 45 minutes and 24-hour tokens at 18 hours, and the refresh token is used (kept alive) daily.
///
/// Never sooner than `floor` ([`Settings::renewal_floor`](super::Settings)) after issue: a token
/// endpoint that hands out tokens living a second must not make the controller call it (and
/// write the Secret) in a loop.
pub fn renew_at(tokens: &TokenSet, floor: Duration) -> SystemTime {
    // Bounded by what `stored_tokens` accepts; past what SystemTime holds means "renew now".
    tokens
        .issued_at
        .checked_add(tokens.expires_in.mul_f64(0.75).max(floor))
        .unwrap_or(tokens.issued_at)
}

pub async fn read(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
) -> Result<Found, kube::Error> {
    let found = secrets.get_opt(&notifier.token_secret_name()).await?;
    Ok(read_from(found, notifier))
}

/// What the token Secret `found` (as read under the notifier's token Secret name) holds.
pub fn read_from(found: Option<Secret>, notifier: &LineWorksNotifier) -> Found {
    let Some(secret) = found else {
        return Found::Nothing;
    };
    if !controlled_by(&secret.metadata, notifier.metadata.uid.as_deref()) {
        return Found::Foreign;
    }
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| text_of(&data, key);
    let stored = stored_tokens(&data, SystemTime::now());
    let pending_state = text(AUTHORIZATION_STATE);
    let authorization_failure = text(AUTHORIZATION_FAILURE).map(|v| {
        let (code, fingerprint) = v.split_once(' ').unwrap_or((v.as_str(), ""));
        AuthorizationFailure {
            code: code.to_string(),
            fingerprint: fingerprint.to_string(),
        }
    });
    let refresh_claim = secret
        .annotations()
        .get(REFRESH_CLAIM_ANNOTATION)
        .and_then(|v| RefreshClaim::parse(v));
    Found::Ours {
        stored,
        pending_state,
        refresh_claim,
        authorization_failure,
        secret: Box::new(secret),
    }
}

/// The longest token lifetime taken from a token Secret. LINE WORKS issues access tokens for a
/// day; whoever may edit Secrets in the namespace may write any number, and a token that seems
/// valid for years would never be renewed (nor its checks re-run).
const LONGEST_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// How far in the future an issue time may lie (clock skew between replicas) before it is junk.
const SKEW: Duration = Duration::from_secs(300);

fn text_of(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

/// The tokens a Secret's data holds, if they read as tokens this controller could have written:
/// times SystemTime can hold, expiry after issue, a lifetime of at most [`LONGEST_LIFETIME`], an
/// issue time not in the future. Anything else is no stored token (a new one is obtained).
fn stored_tokens(data: &BTreeMap<String, ByteString>, now: SystemTime) -> Option<Box<Stored>> {
    let text = |key: &str| text_of(data, key);
    let number = |key: &str| text(key).and_then(|s| s.parse::<u64>().ok());
    let time = |key: &str| number(key).and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    let (issued, expires) = (number(ISSUED_AT)?, number(EXPIRES_AT)?);
    let issued_at = time(ISSUED_AT)?;
    let lifetime = Duration::from_secs(expires.checked_sub(issued).filter(|l| *l > 0)?);
    if lifetime > LONGEST_LIFETIME || issued_at > now + SKEW {
        return None;
    }
    Some(Box::new(Stored {
        tokens: TokenSet {
            access_token: SecretString::from(text(ACCESS_TOKEN)?),
            refresh_token: text(REFRESH_TOKEN).map(SecretString::from),
            token_type: text(TOKEN_TYPE).unwrap_or_else(|| "Bearer".into()),
            scope: text(SCOPE).unwrap_or_default(),
            issued_at,
            expires_in: lifetime,
        },
        fingerprint: text(FINGERPRINT).unwrap_or_default(),
        requested_scopes: text(REQUESTED_SCOPES),
        refresh_issued_at: time(REFRESH_TOKEN_ISSUED_AT)
            .filter(|t| *t <= now + SKEW)
            .filter(|_| text(REFRESH_TOKEN).is_some()),
    }))
}

/// Writes the tokens, whose refresh token was issued at `refresh_issued_at`; fails with a 409 if
/// someone else wrote since `resource_version` was read.
pub async fn write(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    (tokens, refresh_issued_at): (&TokenSet, SystemTime),
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
        put(
            REFRESH_TOKEN_ISSUED_AT,
            &unix_seconds(refresh_issued_at).to_string(),
        );
    }
    put(TOKEN_TYPE, &tokens.token_type);
    put(SCOPE, &tokens.scope);
    put(ISSUED_AT, &unix_seconds(tokens.issued_at).to_string());
    put(EXPIRES_AT, &unix_seconds(tokens.expires_at()).to_string());
    put(FINGERPRINT, fingerprint);
    put(REQUESTED_SCOPES, &scope_key(&notifier.spec.auth.scopes));
    // A fresh object: the pending state and the refresh claim go with the old tokens.
    save(secrets, fresh(notifier, data, resource_version))
        .await
        .map(|_| ())
}

/// Offers a new authorization `state`, keeping whatever tokens the Secret holds (a notifier
/// whose refresh token died still shows them to the relay until they expire).
pub async fn set_pending_state(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    existing: Option<&Secret>,
    state: &str,
) -> Result<(), kube::Error> {
    let mut secret = match existing {
        Some(s) => s.clone(),
        None => fresh(notifier, BTreeMap::new(), None),
    };
    secret.data.get_or_insert_default().insert(
        AUTHORIZATION_STATE.into(),
        ByteString(state.as_bytes().to_vec()),
    );
    save(secrets, secret).await.map(|_| ())
}

/// Removes the pending `state` at the version read: of two callbacks with the same `state`,
/// exactly one succeeds.
pub async fn consume_pending_state(
    secrets: &Api<Secret>,
    existing: &Secret,
) -> Result<Secret, kube::Error> {
    let mut secret = existing.clone();
    if let Some(data) = secret.data.as_mut() {
        data.remove(AUTHORIZATION_STATE);
    }
    save(secrets, secret).await
}

/// Records why the last authorization failed at the callback: LINE WORKS's OAuth error code
/// (letters, digits and underscores only, at most 64) and the fingerprint of the credentials it
/// failed with. The reconcile may be writing a new authorization `state` at the same moment, so a
/// conflict re-reads and writes again. New tokens remove it.
pub async fn record_authorization_failure(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    code: &str,
    fingerprint: &str,
) -> Result<(), kube::Error> {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    let mut last = None;
    for _ in 0..5 {
        let Found::Ours { secret, .. } = read(secrets, notifier).await? else {
            return Ok(());
        };
        let mut secret = *secret;
        secret.data.get_or_insert_default().insert(
            AUTHORIZATION_FAILURE.into(),
            ByteString(format!("{code} {fingerprint}").into_bytes()),
        );
        match save(secrets, secret).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => last = Some(kube::Error::Api(s)),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| kube::Error::Service("the token Secret kept changing".into())))
}

/// Marks a refresh as in flight at the version read; a 409 means someone else got there first.
pub async fn claim_refresh(
    secrets: &Api<Secret>,
    existing: &Secret,
    claim: &RefreshClaim,
) -> Result<Secret, kube::Error> {
    let mut secret = existing.clone();
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(REFRESH_CLAIM_ANNOTATION.into(), claim.render());
    save(secrets, secret).await
}

/// Drops a claim after a refresh whose outcome is known and that stored nothing.
pub async fn release_claim(secrets: &Api<Secret>, existing: &Secret) -> Result<(), kube::Error> {
    let mut secret = existing.clone();
    if let Some(a) = secret.metadata.annotations.as_mut() {
        a.remove(REFRESH_CLAIM_ANNOTATION);
    }
    save(secrets, secret).await.map(|_| ())
}

/// Metadata of a Secret the controller writes for `notifier`: the operator's labels (the watches
/// select them) and an ownerReference (the proof, by UID, that it is the notifier's).
pub(super) fn owned_meta(notifier: &LineWorksNotifier, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: notifier.namespace(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (NOTIFIER_LABEL.to_string(), notifier.name_any()),
        ])),
        owner_references: notifier.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

fn fresh(
    notifier: &LineWorksNotifier,
    data: BTreeMap<String, ByteString>,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            resource_version,
            ..owned_meta(notifier, notifier.token_secret_name())
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Creates the Secret, or replaces it at the resourceVersion it carries.
async fn save(secrets: &Api<Secret>, secret: Secret) -> Result<Secret, kube::Error> {
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match secret.metadata.resource_version {
        None => secrets.create(&params, &secret).await,
        Some(_) => secrets.replace(&secret.name_any(), &params, &secret).await,
    }
}

/// Writes new tokens at the version read. These are the only copy of a rotated refresh token,
/// so a conflicting write (someone edited the Secret meanwhile) is retried at the new version
/// rather than dropped.
pub async fn store(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    tokens: (&TokenSet, SystemTime),
    fingerprint: &str,
    mut version: Option<String>,
) -> Result<(), ReconcileError> {
    for _ in 0..5 {
        match write(secrets, notifier, tokens, fingerprint, version.clone()).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let current = secrets
                    .get_opt(&notifier.token_secret_name())
                    .await
                    .map_err(kube_err("re-reading the token Secret"))?;
                // Someone else's Secret took the name meanwhile: never write tokens into it
                // (its owner could read them); the tokens are dropped and obtained again later.
                if let Some(secret) = &current
                    && !controlled_by(&secret.metadata, notifier.metadata.uid.as_deref())
                {
                    return Err(ReconcileError::ForeignTokenSecret(
                        notifier.token_secret_name(),
                    ));
                }
                version = current.and_then(|s| s.resource_version());
            }
            Err(e) => return Err(kube_err("writing the token Secret")(e)),
        }
    }
    Err(ReconcileError::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn tokens_this_controller_could_have_written_are_read() {
        let found = stored_tokens(
            &data(&[
                (ACCESS_TOKEN, "a"),
                (REFRESH_TOKEN, "r"),
                (ISSUED_AT, "1000"),
                (EXPIRES_AT, "87400"),
                (REFRESH_TOKEN_ISSUED_AT, "900"),
            ]),
            at(2000),
        )
        .map(|s| (s.tokens.expires_in, s.refresh_issued_at));
        assert_eq!(found, Some((Duration::from_secs(86_400), Some(at(900)))));
    }

    #[test]
    fn times_a_tenant_could_write_to_stall_or_crash_renewal_are_no_token() {
        let now = at(1_800_000_000);
        let max = u64::MAX.to_string();
        let cases: [&[(&str, &str)]; 6] = [
            // Past what SystemTime holds.
            &[(ACCESS_TOKEN, "a"), (ISSUED_AT, &max), (EXPIRES_AT, &max)],
            &[(ACCESS_TOKEN, "a"), (ISSUED_AT, "0"), (EXPIRES_AT, &max)],
            // Valid for centuries: never renewed, its checks never re-run.
            &[
                (ACCESS_TOKEN, "a"),
                (ISSUED_AT, "1799999000"),
                (EXPIRES_AT, "9999999999"),
            ],
            // Issued in the future.
            &[
                (ACCESS_TOKEN, "a"),
                (ISSUED_AT, "1900000000"),
                (EXPIRES_AT, "1900086400"),
            ],
            // Expiring before it was issued, or at once.
            &[
                (ACCESS_TOKEN, "a"),
                (ISSUED_AT, "1799999000"),
                (EXPIRES_AT, "1799998000"),
            ],
            &[
                (ACCESS_TOKEN, "a"),
                (ISSUED_AT, "1799999000"),
                (EXPIRES_AT, "1799999000"),
            ],
        ];
        for case in cases {
            assert!(stored_tokens(&data(case), now).is_none(), "{case:?}");
        }
        // A refresh token "issued" in the future has no issue time (its lapse date is unknown).
        let future_refresh = stored_tokens(
            &data(&[
                (ACCESS_TOKEN, "a"),
                (REFRESH_TOKEN, "r"),
                (ISSUED_AT, "1799999000"),
                (EXPIRES_AT, "1800085400"),
                (REFRESH_TOKEN_ISSUED_AT, &max),
            ]),
            now,
        );
        assert_eq!(future_refresh.map(|s| s.refresh_issued_at), Some(None));
    }

    #[test]
    fn renewal_time_never_overflows() {
        let tokens = TokenSet {
            access_token: SecretString::from("a".to_string()),
            refresh_token: None,
            token_type: "Bearer".into(),
            scope: String::new(),
            issued_at: UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2),
            expires_in: Duration::from_secs(u64::MAX / 2),
        };
        assert_eq!(renew_at(&tokens, Duration::from_secs(60)), tokens.issued_at);
    }
}
