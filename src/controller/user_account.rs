//! userAccount mode of the Authorized step: refresh under a claim on the token Secret (single
//! flight across processes), or offer an administrator an authorization URL when there is no
//! refresh token or it was refused.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use lineworks_client::SecretString;

use super::authorization::{Attempt, Authorizer, Gate, TokenSecret, to_timestamp};
use super::diagnosis::{self, Diagnosis};
use super::findings::Findings;
use super::metrics::{Grant, Written};
use super::reconcile::{ReconcileError, kube_err};
use super::tokens::{self, RefreshClaim};
use super::verdict::{Verdict, unauthorized};
use crate::api::conditions::{ConditionStatus, ConditionType, Reason};

impl Authorizer<'_> {
    /// userAccount: refresh under a claim, or ask an administrator to authorize.
    pub(super) async fn user_account_tokens(
        &self,
        stored: &TokenSecret,
        gate: &Gate,
        findings: &mut Findings,
    ) -> Result<Attempt, ReconcileError> {
        let now = gate.now;
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
        if let Err(deferred) = self.pass(gate, stored, findings) {
            return Ok(deferred);
        }
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
        self.ctx.metrics.wrote(Written::TokenSecret);
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
        } else {
            match tokens::release_claim(self.secrets, &marked).await {
                Ok(()) => self.ctx.metrics.wrote(Written::TokenSecret),
                Err(release) => {
                    tracing::warn!(error = %release, "could not release the refresh claim");
                }
            }
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
                ctx.metrics.wrote(Written::TokenSecret);
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
