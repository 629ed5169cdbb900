//! The Authorized step: a usable access token, obtained, renewed and stored as needed.
//!
//! serviceAccount mode renews with the refresh token and falls back to a fresh JWT grant.
//! userAccount mode can only refresh: without a refresh token it offers an authorization URL
//! for an administrator, and each refresh is claimed on the token Secret first (see
//! docs/design.md, "Refresh with Refresh Token Rotation ON"; that flow is in `user_account.rs`).
//! New tokens are stored before anything outside the reconcile sees them (the relay, status),
//! while their first use (the bot checks) runs: with rotation ON the old refresh token is already
//! dead, so a failed write fails the reconcile. No token request goes out sooner than the renewal floor after the last one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt};
use lineworks_client::{
    ExposeSecret, LineWorksClient, LineWorksError, SecretString, ServiceAccount, TokenSet,
    token_fingerprint,
};

use super::context::Context;
use super::credentials::Credentials;
use super::findings::Findings;
use super::metrics::{Grant, Written};
use super::reconcile::{ReconcileError, kube_err};
pub(super) use super::token_in_use::to_timestamp;
use super::token_in_use::{accept, keep_current_on_passing_failure};
use super::tokens::{self, Found, RefreshClaim, Stored};
use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::{ConditionStatus, ConditionType, Reason};
use crate::api::{AuthMode, LineWorksNotifier};

/// Lifetime of a LINE WORKS refresh token.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// When to replace the stored access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// At its scheduled renewal time (or at once if there is none, or the relay reported it
    /// rejected).
    WhenDue,
    /// Now: LINE WORKS just refused it.
    Now,
}

/// A usable access token.
pub struct Authorized {
    pub token: SecretString,
    /// When to renew it.
    pub renew_at: SystemTime,
    /// Identifies the token (its issue time), for the bot-checks cache.
    pub version: String,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// Everything the Authorized step works with for one notifier.
pub struct Authorizer<'a> {
    pub notifier: &'a LineWorksNotifier,
    pub ctx: &'a Context,
    pub secrets: &'a Api<Secret>,
    pub lineworks: &'a LineWorksClient,
    pub credentials: &'a Credentials,
    /// The token Secret as read at the start of the reconcile (beside other reads), used by the
    /// first read instead of asking the API server again; later reads ask.
    pub token_secret: std::sync::Mutex<Option<Option<Secret>>>,
}

/// The token Secret as this reconcile found it.
pub(super) struct TokenSecret {
    /// Tokens obtained with the current credentials, if any.
    pub(super) usable: Option<Box<Stored>>,
    pub(super) pending_state: Option<String>,
    pub(super) claim: Option<RefreshClaim>,
    /// The last authorization failed at the callback with the current credentials.
    pub(super) failure: Option<String>,
    pub(super) secret: Option<Box<Secret>>,
}

/// How a token request went.
pub(super) enum Attempt {
    /// A grant was sent; `claimed` is the token Secret as the refresh claim left it.
    Sent {
        result: Result<TokenSet, LineWorksError>,
        claimed: Option<Box<Secret>>,
    },
    /// Nothing can be obtained now; the verdict saying why is set.
    Stopped,
    /// The renewal floor has not passed: the current token stays in use (unless it was just
    /// refused), and the verdict says when the next request goes out.
    Deferred(Option<Authorized>),
}

/// Whether a token request may go out now: a floor after the current token was issued and
/// after the last attempt to replace it, so a token endpoint handing out 1-second tokens, or an
/// API (or relay) rejecting every token, costs one token request per floor, not one per
/// reconcile.
pub(super) struct Gate {
    pub(super) renewal: Renewal,
    /// When a request may go out; `None` when there is no token to keep using.
    pub(super) earliest: Option<SystemTime>,
    pub(super) now: SystemTime,
}

/// New tokens not yet in the token Secret.
struct Unstored {
    tokens: TokenSet,
    refresh_issued_at: SystemTime,
    /// The token Secret's resourceVersion the write is conditional on.
    version: Option<String>,
}

impl Authorizer<'_> {
    /// A usable token, stored, or `None` after setting the Authorized verdict that says why not.
    pub async fn authorize(
        &self,
        renewal: Renewal,
        findings: &mut Findings,
    ) -> Result<Option<Authorized>, ReconcileError> {
        Ok(self
            .authorize_with(
                renewal,
                findings,
                async |_: &Authorized, _: &mut Findings| {},
            )
            .await?
            .map(|(authorized, ())| authorized))
    }

    /// [`Self::authorize`], and `first_use` of the token. New tokens are written to the token
    /// Secret while `first_use` runs (the bot checks, on the apply → Ready path), not before it:
    /// nothing outside this reconcile sees them until the write succeeded (the relay reads them
    /// from the Secret, status is written after), and if the write fails the reconcile fails
    /// with it and `first_use`'s result is dropped. With rotation ON the new refresh token must
    /// be kept; using its access token once meanwhile does not change that.
    pub async fn authorize_with<T>(
        &self,
        renewal: Renewal,
        findings: &mut Findings,
        first_use: impl AsyncFnOnce(&Authorized, &mut Findings) -> T,
    ) -> Result<Option<(Authorized, T)>, ReconcileError> {
        let Some((authorized, unstored)) = self.obtain(renewal, findings).await? else {
            return Ok(None);
        };
        let Some(unstored) = unstored else {
            let used = first_use(&authorized, findings).await;
            return Ok(Some((authorized, used)));
        };
        let (stored, used) = tokio::join!(
            Box::pin(self.store(unstored)),
            first_use(&authorized, findings)
        );
        if let Some(lapses) = stored? {
            findings.status.refresh_token_expires_at = Some(Time(to_timestamp(lapses)));
        }
        Ok(Some((authorized, used)))
    }

    /// Writes new tokens to the token Secret; when their refresh token lapses.
    async fn store(&self, unstored: Unstored) -> Result<Option<SystemTime>, ReconcileError> {
        let Unstored {
            tokens,
            refresh_issued_at,
            version,
        } = unstored;
        tokens::store(
            self.secrets,
            self.notifier,
            (&tokens, refresh_issued_at),
            &self.credentials.fingerprint,
            version,
        )
        .await?;
        self.ctx.metrics.wrote(Written::TokenSecret);
        Ok(tokens
            .refresh_token
            .is_some()
            .then(|| refresh_issued_at.checked_add(REFRESH_TOKEN_LIFETIME))
            .flatten())
    }

    /// A usable token (with the new tokens still to store, if it is new), or `None` after
    /// setting the Authorized verdict that says why not.
    async fn obtain(
        &self,
        renewal: Renewal,
        findings: &mut Findings,
    ) -> Result<Option<(Authorized, Option<Unstored>)>, ReconcileError> {
        let Some(stored) = self.read(findings).await? else {
            return Ok(None);
        };
        // Tokens stored by the OAuth callback (or by another replica) carry their refresh token's
        // issue time: status says when it lapses without waiting for a renewal.
        if let Some(lapses) = stored
            .usable
            .as_ref()
            .and_then(|s| s.refresh_issued_at?.checked_add(REFRESH_TOKEN_LIFETIME))
        {
            findings.status.refresh_token_expires_at = Some(Time(to_timestamp(lapses)));
        }
        let now = SystemTime::now();
        let floor = self.ctx.settings.renewal_floor;
        // The stored token is known rejected (by LINE WORKS, or as the relay reports).
        let forced = renewal == Renewal::Now || self.relay_saw_rejected(&stored);
        if let Some(s) = &stored.usable
            && !forced
            && tokens::renew_at(&s.tokens, floor) > now
        {
            return Ok(Some((accept(&s.tokens, floor, findings), None)));
        }
        let gate = Gate {
            renewal,
            earliest: self.earliest_renewal(&stored, now),
            now,
        };
        let previous_refresh = stored
            .usable
            .as_ref()
            .and_then(|s| s.tokens.refresh_token.clone());
        let attempt = match (
            self.notifier.spec.auth.mode,
            &self.credentials.service_account,
        ) {
            (AuthMode::ServiceAccount, Some(account)) => {
                match self.pass(&gate, &stored, findings) {
                    Err(deferred) => deferred,
                    Ok(()) => Attempt::Sent {
                        result: self
                            .service_account_tokens(account, previous_refresh.as_ref())
                            .await,
                        claimed: None,
                    },
                }
            }
            _ => self.user_account_tokens(&stored, &gate, findings).await?,
        };
        let (result, claimed) = match attempt {
            Attempt::Sent { result, claimed } => (result, claimed),
            Attempt::Stopped => return Ok(None),
            Attempt::Deferred(authorized) => return Ok(authorized.map(|a| (a, None))),
        };
        let tokens = match result {
            Ok(t) => t,
            Err(e) => {
                return Ok(keep_current_on_passing_failure(
                    self.notifier,
                    &e,
                    stored.usable.as_deref().filter(|_| !forced),
                    now,
                    findings,
                )
                .map(|a| (a, None)));
            }
        };
        let version = claimed
            .as_ref()
            .and_then(|c| c.resource_version())
            .or_else(|| stored.secret.as_ref().and_then(|s| s.resource_version()));
        let same_refresh = tokens
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret)
            == previous_refresh.as_ref().map(ExposeSecret::expose_secret);
        // A refresh that answered no new refresh token keeps the old one, and its issue time
        // (from the Secret, or from status for a Secret written before it was kept there).
        let refresh_issued_at = same_refresh
            .then(|| {
                stored
                    .usable
                    .as_ref()
                    .and_then(|s| s.refresh_issued_at)
                    .or_else(|| {
                        let expires = findings.status.refresh_token_expires_at.as_ref()?;
                        let expires = UNIX_EPOCH
                            + Duration::from_secs(u64::try_from(expires.0.as_second()).ok()?);
                        expires.checked_sub(REFRESH_TOKEN_LIFETIME)
                    })
            })
            .flatten()
            .unwrap_or(tokens.issued_at);
        let authorized = accept(&tokens, floor, findings);
        Ok(Some((
            authorized,
            Some(Unstored {
                tokens,
                refresh_issued_at,
                version,
            }),
        )))
    }

    /// When the current token may be replaced, if there is one.
    fn earliest_renewal(&self, stored: &TokenSecret, now: SystemTime) -> Option<SystemTime> {
        let floor = self.ctx.settings.renewal_floor;
        let issued = stored.usable.as_ref()?.tokens.issued_at;
        let attempted = self.ctx.last_renewal_attempt(&self.key());
        Some(
            [Some(issued), attempted]
                .into_iter()
                .flatten()
                .max()
                .map_or(now, |t| t + floor),
        )
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.notifier.namespace().unwrap_or_default(),
            self.notifier.name_any()
        )
    }

    /// `Ok` when a token request may go out now (recorded as this notifier's last attempt);
    /// otherwise the deferral to return instead.
    pub(super) fn pass(
        &self,
        gate: &Gate,
        stored: &TokenSecret,
        findings: &mut Findings,
    ) -> Result<(), Attempt> {
        let (Some(earliest), Some(current)) = (gate.earliest, stored.usable.as_ref()) else {
            return Ok(());
        };
        if earliest <= gate.now {
            self.ctx.renewal_attempted(&self.key(), gate.now);
            return Ok(());
        }
        if gate.renewal == Renewal::Now {
            // LINE WORKS just refused this token: report the wait instead of checking again
            // with the refused token.
            findings.transient = true;
            findings.set(Verdict::new(
                ConditionType::Authorized,
                ConditionStatus::Unknown,
                Reason::Reconciling,
                format!(
                    "LINE WORKS refused the access token; a new one is requested at most once every {}s, next in {}s",
                    self.ctx.settings.renewal_floor.as_secs(),
                    earliest.duration_since(gate.now).unwrap_or_default().as_secs()
                ),
            ));
            return Err(Attempt::Deferred(None));
        }
        let mut authorized = accept(&current.tokens, self.ctx.settings.renewal_floor, findings);
        authorized.renew_at = earliest;
        Err(Attempt::Deferred(Some(authorized)))
    }

    /// Reads the token Secret; `None` after a verdict when it belongs to someone else.
    async fn read(&self, findings: &mut Findings) -> Result<Option<TokenSecret>, ReconcileError> {
        let prefetched = self
            .token_secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let found = match prefetched {
            Some(found) => tokens::read_from(found, self.notifier),
            None => tokens::read(self.secrets, self.notifier)
                .await
                .map_err(kube_err("reading the token Secret"))?,
        };
        Ok(Some(match found {
            Found::Nothing => TokenSecret {
                usable: None,
                pending_state: None,
                claim: None,
                failure: None,
                secret: None,
            },
            Found::Ours {
                stored,
                pending_state,
                refresh_claim,
                authorization_failure,
                secret,
            } => TokenSecret {
                failure: authorization_failure
                    .filter(|f| f.fingerprint == self.credentials.fingerprint)
                    .map(|f| f.code),
                usable: stored.filter(|s| {
                    s.obtained_with(
                        &self.credentials.fingerprint,
                        &self.notifier.spec.auth.scopes,
                    )
                }),
                pending_state,
                claim: refresh_claim,
                secret: Some(secret),
            },
            Found::Foreign => {
                findings.set(unauthorized(
                    Reason::Stalled,
                    format!(
                        "Secret {} exists but does not belong to this notifier: delete it, or set spec.auth.tokenSecretName to a free name",
                        self.notifier.token_secret_name()
                    ),
                ));
                return Ok(None);
            }
        }))
    }

    /// Whether a relay reported LINE WORKS rejecting the stored access token (an Event naming
    /// that token's fingerprint).
    fn relay_saw_rejected(&self, stored: &TokenSecret) -> bool {
        let key = format!(
            "{}/{}",
            self.notifier.namespace().unwrap_or_default(),
            self.notifier.name_any()
        );
        stored.usable.as_ref().is_some_and(|s| {
            self.ctx.refresh_requests.requested(
                &key,
                self.notifier.metadata.uid.as_deref(),
                &token_fingerprint(&s.tokens.access_token),
            )
        })
    }

    /// Renews with the refresh token when there is one (keeping it alive); a refused refresh
    /// falls back to a fresh JWT grant, which needs no earlier state.
    async fn service_account_tokens(
        &self,
        account: &ServiceAccount,
        refresh: Option<&SecretString>,
    ) -> Result<TokenSet, LineWorksError> {
        let metrics = &self.ctx.metrics;
        if let Some(refresh) = refresh {
            let refreshed = self
                .lineworks
                .refresh(&self.credentials.client, refresh)
                .await
                .map(|r| r.tokens);
            match metrics.count_grant(Grant::Refresh, refreshed) {
                Ok(tokens) => return Ok(tokens),
                Err(e) if e.is_transient() => return Err(e),
                Err(_) => {}
            }
        }
        let issued = self
            .lineworks
            .issue_service_account_token(
                &self.credentials.client,
                account,
                &self.notifier.spec.auth.scopes,
            )
            .await;
        metrics.count_grant(Grant::Jwt, issued)
    }
}
