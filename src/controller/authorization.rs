//! The Authorized step: a usable access token, obtained, renewed and stored as needed.
//!
//! serviceAccount mode renews with the refresh token and falls back to a fresh JWT grant.
//! userAccount mode can only refresh: without a refresh token it offers an authorization URL
//! for an administrator, and each refresh is claimed on the token Secret first (see
//! docs/design.md, "Refresh with Refresh Token Rotation ON"). New tokens are stored before they
//! are used: with rotation ON the old refresh token is already dead.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt};
use lineworks_client::{
    ExposeSecret, LineWorksClient, LineWorksError, SecretString, ServiceAccount, TokenSet,
    token_fingerprint, unix_seconds,
};

use super::context::Context;
use super::credentials::Credentials;
use super::diagnosis::{self, Diagnosis};
use super::findings::Findings;
use super::metrics::Grant;
use super::reconcile::{ReconcileError, kube_err};
use super::tokens::{self, Found, RefreshClaim, Stored};
use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::{ConditionStatus, ConditionType, Reason};
use crate::api::contract::REFRESH_REQUESTED_ANNOTATION;
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
}

/// Everything the Authorized step works with for one notifier.
pub struct Authorizer<'a> {
    pub notifier: &'a LineWorksNotifier,
    pub ctx: &'a Context,
    pub secrets: &'a Api<Secret>,
    pub lineworks: &'a LineWorksClient,
    pub credentials: &'a Credentials,
}

/// The token Secret as this reconcile found it.
struct TokenSecret {
    /// Tokens obtained with the current credentials, if any.
    usable: Option<Box<Stored>>,
    pending_state: Option<String>,
    claim: Option<RefreshClaim>,
    /// The last authorization failed at the callback with the current credentials.
    failure: Option<String>,
    secret: Option<Box<Secret>>,
}

/// How a token request went.
enum Attempt {
    /// A grant was sent; `claimed` is the token Secret as the refresh claim left it.
    Sent {
        result: Result<TokenSet, LineWorksError>,
        claimed: Option<Box<Secret>>,
    },
    /// Nothing can be obtained now; the verdict saying why is set.
    Stopped,
}

impl Authorizer<'_> {
    /// A usable token, or `None` after setting the Authorized verdict that says why not.
    pub async fn authorize(
        &self,
        renewal: Renewal,
        findings: &mut Findings,
    ) -> Result<Option<Authorized>, ReconcileError> {
        let Some(stored) = self.read(findings).await? else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let renew_now = renewal == Renewal::Now || self.relay_saw_rejected(&stored);
        if let Some(s) = &stored.usable
            && !renew_now
            && tokens::renew_at(&s.tokens) > now
        {
            return Ok(Some(accept(&s.tokens, findings)));
        }
        let previous_refresh = stored
            .usable
            .as_ref()
            .and_then(|s| s.tokens.refresh_token.clone());
        let attempt = match (
            self.notifier.spec.auth.mode,
            &self.credentials.service_account,
        ) {
            (AuthMode::ServiceAccount, Some(account)) => Attempt::Sent {
                result: self
                    .service_account_tokens(account, previous_refresh.as_ref())
                    .await,
                claimed: None,
            },
            _ => self.user_account_tokens(&stored, now, findings).await?,
        };
        let (result, claimed) = match attempt {
            Attempt::Sent { result, claimed } => (result, claimed),
            Attempt::Stopped => return Ok(None),
        };
        let tokens = match result {
            Ok(t) => t,
            Err(e) => {
                return Ok(keep_current_on_passing_failure(
                    self.notifier,
                    &e,
                    stored.usable.as_deref().filter(|_| !renew_now),
                    now,
                    findings,
                ));
            }
        };
        let version = claimed
            .as_ref()
            .and_then(|c| c.resource_version())
            .or_else(|| stored.secret.as_ref().and_then(|s| s.resource_version()));
        tokens::store(
            self.secrets,
            self.notifier,
            &tokens,
            &self.credentials.fingerprint,
            version,
        )
        .await?;
        let same_refresh = tokens
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret)
            == previous_refresh.as_ref().map(ExposeSecret::expose_secret);
        if !same_refresh {
            findings.status.refresh_token_expires_at = Some(Time(to_timestamp(
                tokens.issued_at + REFRESH_TOKEN_LIFETIME,
            )));
        }
        Ok(Some(accept(&tokens, findings)))
    }

    /// Reads the token Secret; `None` after a verdict when it belongs to someone else.
    async fn read(&self, findings: &mut Findings) -> Result<Option<TokenSecret>, ReconcileError> {
        let found = tokens::read(self.secrets, self.notifier)
            .await
            .map_err(kube_err("reading the token Secret"))?;
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

    /// Whether the relay reported LINE WORKS rejecting the stored access token (the annotation
    /// holds that token's fingerprint).
    fn relay_saw_rejected(&self, stored: &TokenSecret) -> bool {
        stored.usable.as_ref().is_some_and(|s| {
            self.notifier
                .annotations()
                .get(REFRESH_REQUESTED_ANNOTATION)
                == Some(&token_fingerprint(&s.tokens.access_token))
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

    /// userAccount: refresh under a claim, or ask an administrator to authorize.
    async fn user_account_tokens(
        &self,
        stored: &TokenSecret,
        now: SystemTime,
        findings: &mut Findings,
    ) -> Result<Attempt, ReconcileError> {
        let refresh = stored
            .usable
            .as_ref()
            .and_then(|s| s.tokens.refresh_token.as_ref());
        let (Some(refresh), Some(secret)) = (refresh, &stored.secret) else {
            let url = self
                .offer_authorization(stored.secret.as_deref(), stored.pending_state.as_deref())
                .await?;
            findings.status.authorization_url = Some(url);
            findings.set(match &stored.failure {
                Some(code) => diagnosis::authorization_failed(&self.notifier.spec, code),
                None => unauthorized(
                    Reason::AuthorizationRequired,
                    format!(
                        "a LINE WORKS super or sub administrator must authorize the app once: {} (or run `lineworks-operator authorize {}/{} --listen …` for a local callback)",
                        diagnosis::OPEN_THE_LINK,
                        self.notifier.namespace().unwrap_or_default(),
                        self.notifier.name_any()
                    ),
                ),
            });
            return Ok(Attempt::Stopped);
        };
        // An administrator has been asked to authorize again: the refresh token was refused,
        // so asking LINE WORKS again would only repeat the refusal.
        if stored.pending_state.is_some() {
            let url = self
                .offer_authorization(Some(secret), stored.pending_state.as_deref())
                .await?;
            findings.status.authorization_url = Some(url);
            findings.set(diagnosis::reauthorization(
                self.notifier.condition(ConditionType::Authorized),
            ));
            return Ok(Attempt::Stopped);
        }
        // Single flight across processes: another holder's fresh claim means wait; a stale one
        // (or our own, left by a refresh whose answer never came) means it was interrupted.
        let interrupted = match &stored.claim {
            Some(c) if c.holder != self.ctx.instance => {
                let age = now.duration_since(c.since).unwrap_or_default();
                if age < self.ctx.refresh_claim_ttl() {
                    findings.transient = true;
                    findings.set(Verdict::new(
                        ConditionType::Authorized,
                        ConditionStatus::Unknown,
                        Reason::Reconciling,
                        format!(
                            "{} is refreshing the token (for {}s); waiting for it",
                            c.holder,
                            age.as_secs()
                        ),
                    ));
                    return Ok(Attempt::Stopped);
                }
                Some(c.clone())
            }
            other => other.clone(),
        };
        self.refresh_under_claim(secret, refresh, interrupted.as_ref(), now, findings)
            .await
    }

    /// Claims the refresh on the token Secret, then sends it. A refusal asks for authorization,
    /// naming an interrupted predecessor when there was one.
    async fn refresh_under_claim(
        &self,
        secret: &Secret,
        refresh: &SecretString,
        interrupted: Option<&RefreshClaim>,
        now: SystemTime,
        findings: &mut Findings,
    ) -> Result<Attempt, ReconcileError> {
        let mine = RefreshClaim {
            holder: self.ctx.instance.clone(),
            since: now,
        };
        let marked = tokens::claim_refresh(self.secrets, secret, &mine)
            .await
            .map_err(kube_err("claiming the token refresh"))?;
        let refreshed = self
            .lineworks
            .refresh(&self.credentials.client, refresh)
            .await
            .map(|r| r.tokens);
        let result = self.ctx.metrics.count_grant(Grant::Refresh, refreshed);
        let Err(e) = &result else {
            return Ok(Attempt::Sent {
                result,
                claimed: Some(Box::new(marked)),
            });
        };
        if e.maybe_processed() {
            // LINE WORKS may have rotated the token: the claim stays as the record.
        } else if let Err(release) = tokens::release_claim(self.secrets, &marked).await {
            tracing::warn!(error = %release, "could not release the refresh claim");
        }
        if e.may_pass() {
            return Ok(Attempt::Sent {
                result,
                claimed: Some(Box::new(marked)),
            });
        }
        let Diagnosis {
            mut verdicts,
            passing,
        } = diagnosis::token_failure(&self.notifier.spec, e);
        let url = self.offer_authorization(None, None).await?;
        for verdict in &mut verdicts {
            verdict.message = match interrupted {
                Some(c) => format!(
                    "a token refresh started by {} at {} never finished (the controller stopped or lost LINE WORKS's answer), and LINE WORKS now refuses the refresh token ({e}): with Refresh Token Rotation ON it had already been replaced. An administrator must authorize again: {}",
                    c.holder,
                    to_timestamp(c.since),
                    diagnosis::OPEN_THE_LINK
                ),
                None => format!("{}: {}", verdict.message, diagnosis::OPEN_THE_LINK),
            };
        }
        findings.status.authorization_url = Some(url);
        findings.diagnose(Diagnosis { verdicts, passing });
        Ok(Attempt::Stopped)
    }

    /// The URL an administrator opens, with a signed `state` kept in the token Secret. The
    /// current one is reused while it has a quarter of its lifetime left, so status does not
    /// churn.
    async fn offer_authorization(
        &self,
        secret: Option<&Secret>,
        pending: Option<&str>,
    ) -> Result<String, ReconcileError> {
        let (notifier, ctx) = (self.notifier, self.ctx);
        let lifetime = ctx.settings.state_lifetime;
        let reusable = pending.filter(|state| {
            ctx.state_key.verify(state).is_ok_and(|claims| {
                claims.uid == notifier.uid().unwrap_or_default()
                    && claims
                        .expires_at()
                        .duration_since(SystemTime::now())
                        .is_ok_and(|left| left > lifetime / 4)
            })
        });
        let state = match reusable {
            Some(state) => state.to_string(),
            None => {
                let minted = ctx.state_key.mint(notifier, lifetime);
                // Read again when the caller has no current copy (it may have just changed).
                let current = match secret {
                    Some(s) => Some(s.clone()),
                    None => self
                        .secrets
                        .get_opt(&notifier.token_secret_name())
                        .await
                        .map_err(kube_err("reading the token Secret"))?,
                };
                tokens::set_pending_state(self.secrets, notifier, current.as_ref(), &minted.token)
                    .await
                    .map_err(kube_err("storing the authorization state"))?;
                minted.token
            }
        };
        Ok(self.lineworks.authorize_url(
            &self.credentials.client.client_id,
            notifier.spec.redirect_url(),
            &notifier.spec.auth.scopes,
            &state,
        ))
    }
}

/// A renewal that failed for a passing reason leaves the current token in use while it lasts:
/// an outage of the token endpoint must not take a working notifier down. Any other failure
/// sets its verdict and yields no token.
fn keep_current_on_passing_failure(
    notifier: &LineWorksNotifier,
    e: &LineWorksError,
    current: Option<&Stored>,
    now: SystemTime,
    findings: &mut Findings,
) -> Option<Authorized> {
    let diagnosis = diagnosis::token_failure(&notifier.spec, e);
    let keep = current.filter(|s| s.tokens.expires_at() > now && diagnosis.passing);
    let Some(current) = keep else {
        findings.diagnose(diagnosis);
        return None;
    };
    findings.transient = true;
    let why = diagnosis
        .verdicts
        .first()
        .map(|v| v.message.clone())
        .unwrap_or_default();
    let mut authorized = accept(&current.tokens, findings);
    findings.set(Verdict::new(
        ConditionType::Authorized,
        ConditionStatus::True,
        Reason::TokenValid,
        format!(
            "renewal failed ({why}); the current token stays valid until it expires, retrying with backoff"
        ),
    ));
    authorized.renew_at = now;
    Some(authorized)
}

/// Authorized=True for `tokens`, which are now the ones in use.
fn accept(tokens: &TokenSet, findings: &mut Findings) -> Authorized {
    findings.status.access_token_expires_at = Some(Time(to_timestamp(tokens.expires_at())));
    findings.status.authorization_url = None;
    findings.set(Verdict::new(
        ConditionType::Authorized,
        ConditionStatus::True,
        Reason::TokenValid,
        format!(
            "access token valid; renewed automatically before it expires (scope {})",
            tokens.scope
        ),
    ));
    Authorized {
        token: tokens.access_token.clone(),
        renew_at: tokens::renew_at(tokens),
        version: unix_seconds(tokens.issued_at).to_string(),
    }
}

pub(super) fn to_timestamp(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(unix_seconds(t)).unwrap_or(i64::MAX))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
