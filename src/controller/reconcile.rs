//! One reconcile of a notifier: credentials → token → bot checks → test notification → status.
//! Each step either passes or yields the verdict that tells a person what to fix; later steps
//! wait for earlier ones. Unchanged notifiers with a fresh token make no LINE WORKS call.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::credentials::{self, Credentials};
use super::metrics::{ReasonLabel, ResultLabel, TokenLabel};
use super::status;
use super::tokens::{self, Found};
use super::verdict::{Truth, Verdict, not_in_service, unauthorized};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::{
    AuthMode, DeliveryResult, LineWorksNotifier, LineWorksNotifierStatus, TargetKind, TargetResult,
    TestNotificationStatus,
};
use lineworks_client::{
    Content, I18nText, LineWorksClient, LineWorksError, SecretString, TokenSet,
};

/// Lifetime of a LINE WORKS refresh token.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// Failures that stop a reconcile before it can report in status (the API server itself).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the notifier has no namespace")]
    NoNamespace,
    #[error("the token Secret kept changing while new tokens were being stored")]
    Conflict,
    #[error("revoking the tokens: {0}")]
    Revocation(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Kube { action, source }
}

/// A usable access token.
struct Authorized {
    token: SecretString,
    /// When to renew it.
    renew_at: SystemTime,
    /// Identifies the token (its issue time), for the checks cache.
    version: String,
}

/// What the steps found, turned into status at the end.
struct Findings {
    verdicts: Vec<Verdict>,
    /// A step hit something that may pass by itself (LINE WORKS down, rate limited): back off.
    transient: bool,
    requeue: Option<Duration>,
    status: LineWorksNotifierStatus,
}

impl Findings {
    fn set(&mut self, verdict: Verdict) {
        self.verdicts.retain(|v| v.type_ != verdict.type_);
        self.verdicts.push(verdict);
    }

    fn get(&self, type_: ConditionType) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.type_ == type_)
    }
}

pub async fn reconcile(
    notifier: Arc<LineWorksNotifier>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = notifier.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<LineWorksNotifier> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(
        &api,
        super::revocation::FINALIZER,
        notifier,
        |event| async {
            match event {
                FinalizerEvent::Apply(n) => run(&n, &ctx).await,
                FinalizerEvent::Cleanup(n) => super::revocation::cleanup(&n, &ctx).await,
            }
        },
    )
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    });
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    result
}

async fn run(notifier: &LineWorksNotifier, ctx: &Context) -> Result<Action, ReconcileError> {
    let ns = notifier.namespace().ok_or(ReconcileError::NoNamespace)?;
    let key = format!("{ns}/{}", notifier.name_any());
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut findings = Findings {
        verdicts: Vec::new(),
        transient: false,
        requeue: None,
        status: notifier.status.clone().unwrap_or_default(),
    };
    findings.status.token_secret_name = Some(notifier.token_secret_name());

    if notifier.spec.suspend {
        findings.set(not_in_service(
            Reason::Suspended,
            "spec.suspend is true (このチャットアプリケーションを使用する is off): no checks, no token renewal, the relay refuses notifications; set suspend: false to resume",
        ));
    } else {
        steps(notifier, ctx, &key, &notifiers, &secrets, &mut findings).await?;
    }
    summarize(notifier, &mut findings);

    let old = notifier
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let changed: Vec<Verdict> = status::transitions(&old, &findings.verdicts)
        .into_iter()
        .cloned()
        .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    findings.status.conditions =
        status::merge(&old, &findings.verdicts, notifier.metadata.generation, &now);
    findings.status.observed_generation = notifier.metadata.generation;
    status::apply(&notifiers, notifier, &findings.status)
        .await
        .map_err(kube_err("writing status"))?;
    for v in findings.verdicts.iter().filter(|v| !v.is_true()) {
        ctx.metrics
            .failures
            .get_or_create(&ReasonLabel {
                condition: v.type_.as_str().into(),
                reason: v.reason.as_str().into(),
            })
            .inc();
    }
    let changed_refs: Vec<&Verdict> = changed.iter().collect();
    status::publish(&ctx.recorder, notifier, &changed_refs).await;

    // Not Ready: look again with backoff, since most fixes happen in LINE WORKS (console, admin
    // screen, talk room), which sends no event here. Changes to the notifier or its Secrets
    // trigger a reconcile at once anyway.
    let ready = findings
        .get(ConditionType::Ready)
        .is_some_and(Verdict::is_true);
    if findings.transient || (!ready && !notifier.spec.suspend) {
        return Ok(Action::requeue(ctx.backoff(&key)));
    }
    ctx.reset_backoff(&key);
    Ok(match findings.requeue {
        Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
        None => Action::await_change(),
    })
}

async fn steps(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    key: &str,
    notifiers: &Api<LineWorksNotifier>,
    secrets: &Api<Secret>,
    findings: &mut Findings,
) -> Result<(), ReconcileError> {
    let lineworks = ctx.lineworks(notifier);
    let credentials = match credentials::load(secrets, notifier)
        .await
        .map_err(kube_err("reading the credentials Secret"))?
    {
        Ok(c) => c,
        Err(verdict) => {
            ctx.set_verified(key, None);
            findings.set(verdict);
            return Ok(());
        }
    };
    let mut authorized = match authorize(
        notifier,
        ctx,
        secrets,
        &lineworks,
        &credentials,
        false,
        findings,
    )
    .await?
    {
        Some(a) => a,
        None => return Ok(()),
    };

    // Bot checks, skipped when this spec already passed them with this token.
    let fingerprint = checks_fingerprint(notifier, &authorized.version);
    if ctx.verified(key).as_deref() == Some(fingerprint.as_str())
        && has_true(notifier, ConditionType::BotInService)
    {
        findings.set(Verdict::new(
            ConditionType::BotInService,
            Truth::True,
            Reason::BotReachable,
            in_service_message(notifier),
        ));
    } else {
        let mut outcome = check_bot(notifier, &lineworks, &authorized.token, findings).await;
        if matches!(outcome, Err(LineWorksError::Unauthorized { .. })) {
            // The token died early (revoked, password changed): get a new one once and retry.
            authorized = match authorize(
                notifier,
                ctx,
                secrets,
                &lineworks,
                &credentials,
                true,
                findings,
            )
            .await?
            {
                Some(a) => a,
                None => return Ok(()),
            };
            outcome = check_bot(notifier, &lineworks, &authorized.token, findings).await;
        }
        match outcome {
            Ok(verdict) => {
                if verdict.is_true() {
                    ctx.set_verified(key, Some(checks_fingerprint(notifier, &authorized.version)));
                } else {
                    ctx.set_verified(key, None);
                }
                findings.set(verdict);
            }
            Err(e) => {
                ctx.set_verified(key, None);
                let verdict = api_failure(ConditionType::BotInService, &e, findings);
                findings.set(verdict);
            }
        }
    }
    findings.requeue = Some(
        authorized
            .renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    );

    test_notification(notifier, notifiers, &lineworks, &authorized.token, findings).await
}

/// What the bot checks depend on: the spec fields they read and the token they ran with (so
/// they run again at each scheduled renewal, a natural periodic re-verification).
fn checks_fingerprint(notifier: &LineWorksNotifier, token_version: &str) -> String {
    let spec = &notifier.spec;
    format!(
        "{}|{:?}|{:?}|{}|{token_version}",
        spec.bot_id,
        spec.domain_id,
        spec.room(),
        spec.api_base_url()
    )
}

fn has_true(notifier: &LineWorksNotifier, type_: ConditionType) -> bool {
    notifier.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == type_.as_str()
                && c.status == "True"
                && c.observed_generation == notifier.metadata.generation
        })
    })
}

/// Returns a usable token, obtaining, renewing and storing it as needed; `None` after setting an
/// Authorized=False verdict.
async fn authorize(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    secrets: &Api<Secret>,
    lineworks: &LineWorksClient,
    credentials: &Credentials,
    force_new: bool,
    findings: &mut Findings,
) -> Result<Option<Authorized>, ReconcileError> {
    let found = tokens::read(secrets, notifier)
        .await
        .map_err(kube_err("reading the token Secret"))?;
    let (stored, pending_state, claim, secret) = match found {
        Found::Nothing => (None, None, None, None),
        Found::Ours {
            stored,
            pending_state,
            refresh_claim,
            secret,
        } => (stored, pending_state, refresh_claim, Some(secret)),
        Found::Foreign => {
            findings.set(unauthorized(
                Reason::Stalled,
                format!(
                    "Secret {} exists but does not belong to this notifier: delete it, or set spec.auth.tokenSecretName to a free name",
                    notifier.token_secret_name()
                ),
            ));
            return Ok(None);
        }
    };
    let resource_version = secret.as_ref().and_then(|s| s.resource_version());
    let now = SystemTime::now();
    let usable = stored.filter(|s| s.fingerprint == credentials.fingerprint);
    // The relay saw LINE WORKS reject this very token (annotation = its fingerprint): renew.
    let force_new = force_new
        || usable.as_ref().is_some_and(|s| {
            notifier.annotations().get(crate::api::contract::REFRESH_REQUESTED_ANNOTATION)
                == Some(&lineworks_client::token_fingerprint(&s.tokens.access_token))
        });
    if let Some(s) = &usable
        && !force_new
        && tokens::renew_at(&s.tokens) > now
    {
        return Ok(Some(accept(&s.tokens, findings)));
    }

    let previous_refresh = usable.as_ref().and_then(|s| s.tokens.refresh_token.clone());
    let mut claimed = None;
    let obtained = match (notifier.spec.auth.mode, &credentials.service_account) {
        (AuthMode::ServiceAccount, Some(account)) => {
            // Renew with the refresh token when there is one (keeps it alive); a refused refresh
            // falls back to a fresh JWT grant, which needs no earlier state.
            let refreshed = match &previous_refresh {
                Some(refresh) if usable.is_some() => Some(grant(
                    ctx,
                    "refresh",
                    lineworks
                        .refresh(&credentials.client, refresh)
                        .await
                        .map(|r| r.tokens),
                )),
                _ => None,
            };
            match refreshed {
                Some(Ok(tokens)) => Ok(tokens),
                Some(Err(e)) if e.is_transient() => Err(e),
                _ => grant(
                    ctx,
                    "jwt",
                    lineworks
                        .issue_service_account_token(
                            &credentials.client,
                            account,
                            &notifier.spec.auth.scopes,
                        )
                        .await,
                ),
            }
        }
        _ => {
            let (Some(refresh), Some(secret)) = (&previous_refresh, &secret) else {
                let url = offer_authorization(
                    notifier,
                    ctx,
                    secrets,
                    secret.as_deref(),
                    pending_state.as_deref(),
                    lineworks,
                    credentials,
                )
                .await?;
                findings.status.authorization_url = Some(url.clone());
                findings.set(unauthorized(
                    Reason::AuthorizationRequired,
                    format!("a LINE WORKS super or sub administrator must authorize the app once: open {url} (or run `lineworks-operator authorize {}/{}`)", notifier.namespace().unwrap_or_default(), notifier.name_any()),
                ));
                return Ok(None);
            };
            // An administrator has been asked to authorize again: the refresh token was refused,
            // so asking LINE WORKS again would only repeat the refusal.
            if pending_state.is_some() {
                let url = offer_authorization(
                    notifier,
                    ctx,
                    secrets,
                    Some(secret),
                    pending_state.as_deref(),
                    lineworks,
                    credentials,
                )
                .await?;
                findings.status.authorization_url = Some(url.clone());
                findings.set(reauthorization_verdict(notifier, &url));
                return Ok(None);
            }
            // Single flight across processes: claim the refresh on the Secret first.
            let interrupted = match &claim {
                Some(c) if c.holder != ctx.instance => {
                    let age = now.duration_since(c.since).unwrap_or_default();
                    if age < ctx.refresh_claim_ttl() {
                        findings.transient = true;
                        findings.set(Verdict::new(
                            ConditionType::Authorized,
                            Truth::Unknown,
                            Reason::Reconciling,
                            format!(
                                "{} is refreshing the token (for {}s); waiting for it",
                                c.holder,
                                age.as_secs()
                            ),
                        ));
                        return Ok(None);
                    }
                    Some(c.clone())
                }
                // Our own claim survives only a refresh whose answer never came.
                Some(c) => Some(c.clone()),
                None => None,
            };
            let mine = tokens::RefreshClaim {
                holder: ctx.instance.clone(),
                since: now,
            };
            let marked = tokens::claim_refresh(secrets, secret, &mine)
                .await
                .map_err(kube_err("claiming the token refresh"))?;
            let result = grant(
                ctx,
                "refresh",
                lineworks
                    .refresh(&credentials.client, refresh)
                    .await
                    .map(|r| r.tokens),
            );
            if let Err(e) = &result {
                if e.maybe_processed() {
                    // LINE WORKS may have rotated the token: the claim stays as the record.
                } else if let Err(release) = tokens::release_claim(secrets, &marked).await {
                    tracing::warn!(error = %release, "could not release the refresh claim");
                }
                if !e.is_transient() && !matches!(e, LineWorksError::DeadlineExceeded { .. }) {
                    let mut verdict = token_failure(notifier, e, findings);
                    let url = offer_authorization(
                        notifier,
                        ctx,
                        secrets,
                        None,
                        None,
                        lineworks,
                        credentials,
                    )
                    .await?;
                    if let Some(c) = &interrupted {
                        verdict.message = format!(
                            "a token refresh started by {} at {} never finished (the controller stopped or lost LINE WORKS's answer), and LINE WORKS now refuses the refresh token ({e}): with Refresh Token Rotation ON it had already been replaced. An administrator must authorize again: open {url}",
                            c.holder,
                            to_timestamp(c.since)
                        );
                    } else {
                        verdict.message = format!("{}: open {url}", verdict.message);
                    }
                    findings.status.authorization_url = Some(url);
                    findings.set(verdict);
                    return Ok(None);
                }
            }
            claimed = Some(marked);
            result
        }
    };
    let tokens = match obtained {
        Ok(t) => t,
        Err(e) => {
            let verdict = token_failure(notifier, &e, findings);
            // A renewal that failed for a passing reason leaves the current token in use while it
            // lasts: an outage of the token endpoint must not take a working notifier down.
            if let Some(current) = usable
                .as_ref()
                .filter(|s| s.tokens.expires_at() > now && !force_new)
                && findings.transient
            {
                let mut authorized = accept(&current.tokens, findings);
                findings.set(Verdict::new(
                    ConditionType::Authorized,
                    Truth::True,
                    Reason::TokenValid,
                    format!("renewal failed ({}); the current token stays valid until it expires, retrying with backoff", verdict.message),
                ));
                authorized.renew_at = now;
                return Ok(Some(authorized));
            }
            findings.set(verdict);
            return Ok(None);
        }
    };
    // Persist before use: with rotation ON the old refresh token is already dead.
    let version = claimed
        .as_ref()
        .and_then(|c| c.resource_version())
        .or(resource_version);
    store_tokens(
        secrets,
        notifier,
        &tokens,
        &credentials.fingerprint,
        version,
    )
    .await?;
    if tokens
        .refresh_token
        .as_ref()
        .map(|r| lineworks_client::ExposeSecret::expose_secret(r).to_string())
        != previous_refresh
            .as_ref()
            .map(|r| lineworks_client::ExposeSecret::expose_secret(r).to_string())
    {
        findings.status.refresh_token_expires_at = Some(Time(to_timestamp(
            tokens.issued_at + REFRESH_TOKEN_LIFETIME,
        )));
    }
    Ok(Some(accept(&tokens, findings)))
}

/// Writes new tokens at the version read. These are the only copy of a rotated refresh token,
/// so a conflicting write (someone edited the Secret meanwhile) is retried at the new version
/// rather than dropped.
pub(super) async fn store_tokens(
    secrets: &Api<Secret>,
    notifier: &LineWorksNotifier,
    tokens: &TokenSet,
    fingerprint: &str,
    mut version: Option<String>,
) -> Result<(), ReconcileError> {
    for _ in 0..5 {
        match tokens::write(secrets, notifier, tokens, fingerprint, version.clone()).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                version = secrets
                    .get_opt(&notifier.token_secret_name())
                    .await
                    .map_err(kube_err("re-reading the token Secret"))?
                    .and_then(|s| s.resource_version());
            }
            Err(e) => return Err(kube_err("writing the token Secret")(e)),
        }
    }
    Err(ReconcileError::Conflict)
}

/// The URL an administrator opens, with a signed `state` kept in the token Secret. The current
/// one is reused while it has a quarter of its lifetime left, so status does not churn.
async fn offer_authorization(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    secrets: &Api<Secret>,
    secret: Option<&Secret>,
    pending: Option<&str>,
    lineworks: &LineWorksClient,
    credentials: &Credentials,
) -> Result<String, ReconcileError> {
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
                None => secrets
                    .get_opt(&notifier.token_secret_name())
                    .await
                    .map_err(kube_err("reading the token Secret"))?,
            };
            tokens::set_pending_state(secrets, notifier, current.as_ref(), &minted.token)
                .await
                .map_err(kube_err("storing the authorization state"))?;
            minted.token
        }
    };
    let redirect = notifier
        .spec
        .auth
        .user_account
        .as_ref()
        .map(|u| u.redirect_url.as_str())
        .unwrap_or_default();
    Ok(lineworks.authorize_url(
        &credentials.client.client_id,
        redirect,
        &notifier.spec.auth.scopes,
        &state,
    ))
}

/// ReauthorizationRequired while waiting for an administrator: keeps the cause found when the
/// refresh token was refused, with the current URL.
fn reauthorization_verdict(notifier: &LineWorksNotifier, url: &str) -> Verdict {
    let previous = notifier
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Authorized"))
        .filter(|c| {
            c.reason == Reason::ReauthorizationRequired.as_str() && c.message.ends_with(url)
        });
    match previous {
        Some(c) => unauthorized(Reason::ReauthorizationRequired, c.message.clone()),
        None => unauthorized(
            Reason::ReauthorizationRequired,
            format!(
                "LINE WORKS refused the refresh token: it lapsed (90 days unused) or the authorizing administrator's password or role changed; an administrator must authorize again: open {url}"
            ),
        ),
    }
}

fn grant<T>(
    ctx: &Context,
    kind: &str,
    result: Result<T, LineWorksError>,
) -> Result<T, LineWorksError> {
    ctx.metrics
        .token_grants
        .get_or_create(&TokenLabel {
            grant: kind.into(),
            result: if result.is_ok() { "ok" } else { "error" }.into(),
        })
        .inc();
    result
}

fn accept(tokens: &TokenSet, findings: &mut Findings) -> Authorized {
    findings.status.access_token_expires_at = Some(Time(to_timestamp(tokens.expires_at())));
    findings.status.authorization_url = None;
    findings.set(Verdict::new(
        ConditionType::Authorized,
        Truth::True,
        Reason::TokenValid,
        format!(
            "access token valid; renewed automatically before it expires (scope {})",
            tokens.scope
        ),
    ));
    Authorized {
        token: tokens.access_token.clone(),
        renew_at: tokens::renew_at(tokens),
        version: tokens
            .issued_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
    }
}

fn to_timestamp(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// Authorized=False for a failed token request.
fn token_failure(
    notifier: &LineWorksNotifier,
    e: &LineWorksError,
    findings: &mut Findings,
) -> Verdict {
    let secret = &notifier.spec.auth.credentials_secret_ref.name;
    if e.is_transient()
        || matches!(
            e,
            LineWorksError::DeadlineExceeded { .. } | LineWorksError::InvalidResponse { .. }
        )
    {
        findings.transient = true;
        return unauthorized(
            Reason::TokenEndpointUnavailable,
            format!(
                "LINE WORKS token endpoint {} is not answering ({e}); retrying with backoff, nothing to fix unless it persists (check authBaseURL and egress to it)",
                notifier.spec.auth_base_url()
            ),
        );
    }
    let code = e.body().map(|b| b.code.as_str()).unwrap_or_default();
    match (code, notifier.spec.auth.mode) {
        ("invalid_client", _) => unauthorized(
            Reason::InvalidClientCredentials,
            format!(
                "LINE WORKS refused the Client ID or Client Secret in Secret {secret} ({e}): copy both again from Developer Console > API 2.0 > (app)"
            ),
        ),
        ("invalid_scope", _) => unauthorized(
            Reason::ScopeMissing,
            format!(
                "the app lacks a requested scope ({e}): in Developer Console > API 2.0 > (app) > OAuth Scopes check {}",
                notifier.spec.auth.scopes.join(", ")
            ),
        ),
        (_, AuthMode::ServiceAccount) => unauthorized(
            Reason::PrivateKeyInvalid,
            format!(
                "LINE WORKS refused the Service Account assertion ({e}): the Service Account ID or private key in Secret {secret} does not belong to this app; issue them again in Developer Console > API 2.0 > (app) > Service Account"
            ),
        ),
        (_, AuthMode::UserAccount) => unauthorized(
            Reason::ReauthorizationRequired,
            format!(
                "LINE WORKS refused the refresh token ({e}): it lapsed (90 days unused) or the authorizing administrator's password or role changed; an administrator must authorize again"
            ),
        ),
    }
}

/// A condition for a LINE WORKS call that failed without saying what is misconfigured.
fn api_failure(type_: ConditionType, e: &LineWorksError, findings: &mut Findings) -> Verdict {
    if matches!(e, LineWorksError::Unauthorized { .. }) {
        findings.set(unauthorized(
            Reason::ReauthorizationRequired,
            format!("a fresh token was refused too ({e}): the app's authorization was revoked; authorize again"),
        ));
    }
    findings.transient = true;
    Verdict::new(
        type_,
        Truth::Unknown,
        Reason::Reconciling,
        format!("could not check with LINE WORKS ({e}); retrying with backoff"),
    )
}

fn in_service_message(notifier: &LineWorksNotifier) -> String {
    match notifier.spec.room() {
        Some(room) => format!(
            "bot {} is added to the domain and invited to room {room}",
            notifier.spec.bot_id
        ),
        None => format!(
            "bot {} is added to the domain (DM only)",
            notifier.spec.bot_id
        ),
    }
}

/// The seed's checklist item 6, as API calls: the bot exists, is added to the domain, and (with a
/// room) is in the room. `Err` only for failures that say nothing about the configuration.
async fn check_bot(
    notifier: &LineWorksNotifier,
    lineworks: &LineWorksClient,
    token: &SecretString,
    findings: &mut Findings,
) -> Result<Verdict, LineWorksError> {
    let spec = &notifier.spec;
    let bot = match lineworks.get_bot(token, spec.bot_id).await {
        Ok(bot) => bot,
        Err(LineWorksError::NotFound { .. }) => {
            return Ok(not_in_service(
                Reason::BotNotFound,
                format!(
                    "LINE WORKS has no bot {}: copy the Bot ID from Developer Console > Bot and set spec.botId",
                    spec.bot_id
                ),
            ));
        }
        Err(e @ LineWorksError::Forbidden { .. }) => {
            findings.set(unauthorized(
                Reason::ScopeMissing,
                format!("the token may not read bots ({e}): in Developer Console > API 2.0 > (app) > OAuth Scopes check bot and bot.read, then change any field of the credentials Secret"),
            ));
            return Ok(Verdict::new(
                ConditionType::BotInService,
                Truth::Unknown,
                Reason::NotAuthorized,
                "waiting for Authorized",
            ));
        }
        Err(e) => return Err(e),
    };
    findings.status.bot_name = Some(bot.bot_name.clone());
    let domains = lineworks.list_bot_domains(token, spec.bot_id).await?;
    let added = match spec.domain_id {
        Some(id) => domains.iter().any(|d| d.domain_id == id),
        None => !domains.is_empty(),
    };
    if !added {
        return Ok(not_in_service(
            Reason::BotNotInDomain,
            format!(
                "bot {} ({}) is not added to {} (shown as 準備中): LINE WORKS admin screen > Service > Bot > Bot追加 > add it",
                spec.bot_id,
                bot.bot_name,
                spec.domain_id
                    .map(|d| format!("domain {d}"))
                    .unwrap_or_else(|| "any domain".into())
            ),
        ));
    }
    if let Some(room) = spec.room() {
        match lineworks.get_channel(token, spec.bot_id, room).await {
            Ok(_) => {}
            Err(LineWorksError::NotFound { .. }) => {
                return Ok(not_in_service(
                    Reason::RoomNotFound,
                    format!(
                        "LINE WORKS has no talk room {room}: copy the room's チャンネルID (room menu ... > チャンネルID) into spec.roomId, or remove roomId for DM only"
                    ),
                ));
            }
            Err(LineWorksError::Forbidden { .. }) => {
                return Ok(not_in_service(
                    Reason::BotNotInRoom,
                    format!(
                        "bot {} is not in talk room {room}: in LINE WORKS open the room > ... > 招待 > Bot > {}",
                        spec.bot_id, bot.bot_name
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Verdict::new(
        ConditionType::BotInService,
        Truth::True,
        Reason::BotReachable,
        in_service_message(notifier),
    ))
}

/// Sends the requested test notification at most once per id, and reports the last one.
async fn test_notification(
    notifier: &LineWorksNotifier,
    notifiers: &Api<LineWorksNotifier>,
    lineworks: &LineWorksClient,
    token: &SecretString,
    findings: &mut Findings,
) -> Result<(), ReconcileError> {
    let Some(request) = &notifier.spec.test_notification else {
        findings.set(test_not_requested());
        return Ok(());
    };
    let already = findings
        .status
        .last_test_notification
        .as_ref()
        .is_some_and(|t| t.id == request.id);
    let ready_to_send = findings
        .get(ConditionType::BotInService)
        .is_some_and(Verdict::is_true)
        && findings
            .get(ConditionType::Authorized)
            .is_some_and(Verdict::is_true);
    if !already {
        if !ready_to_send {
            findings.set(test_waiting(&request.id));
            return Ok(());
        }
        // Record the attempt first: a restart mid-send must not send it again.
        let mut pending = findings.status.clone();
        pending.last_test_notification = Some(TestNotificationStatus {
            id: request.id.clone(),
            sent_at: Time(k8s_openapi::jiff::Timestamp::now()),
            result: DeliveryResult::Sending,
            targets: Vec::new(),
        });
        status::apply(notifiers, notifier, &pending)
            .await
            .map_err(kube_err("recording the test notification"))?;
        let targets = send_test(notifier, lineworks, token).await;
        let delivered = targets.iter().filter(|t| t.delivered).count();
        pending.last_test_notification = Some(TestNotificationStatus {
            result: match delivered {
                d if d == targets.len() => DeliveryResult::Delivered,
                0 => DeliveryResult::Failed,
                _ => DeliveryResult::PartiallyDelivered,
            },
            targets,
            ..pending
                .last_test_notification
                .unwrap_or_else(|| unreachable_status(&request.id))
        });
        findings.status.last_test_notification = pending.last_test_notification;
    }
    findings.set(test_verdict(
        notifier,
        findings.status.last_test_notification.as_ref(),
    ));
    Ok(())
}

fn unreachable_status(id: &str) -> TestNotificationStatus {
    TestNotificationStatus {
        id: id.into(),
        sent_at: Time(k8s_openapi::jiff::Timestamp::now()),
        result: DeliveryResult::Failed,
        targets: Vec::new(),
    }
}

fn test_content(notifier: &LineWorksNotifier) -> Content {
    match notifier
        .spec
        .templates
        .as_ref()
        .and_then(|t| t.test.as_ref())
    {
        Some(template) => Content::Text {
            text: template.text.clone(),
            i18n_texts: template
                .i18n_texts
                .iter()
                .map(|t| I18nText {
                    language: serde_json::to_value(t.language)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    text: t.text.clone(),
                })
                .collect(),
        },
        None => Content::text(crate::api::contract::DEFAULT_TEST_TEXT),
    }
}

async fn send_test(
    notifier: &LineWorksNotifier,
    lineworks: &LineWorksClient,
    token: &SecretString,
) -> Vec<TargetResult> {
    let content = test_content(notifier);
    let spec = &notifier.spec;
    let user = spec.default_user_login_id();
    let mut results = vec![target_result(
        TargetKind::User,
        &user,
        lineworks
            .send_to_user(token, spec.bot_id, &user, &content)
            .await,
    )];
    if let Some(room) = spec.room() {
        results.push(target_result(
            TargetKind::Room,
            room,
            lineworks
                .send_to_channel(token, spec.bot_id, room, &content)
                .await,
        ));
    }
    results
}

fn target_result(
    kind: TargetKind,
    target: &str,
    outcome: Result<(), LineWorksError>,
) -> TargetResult {
    let (code, description) = match &outcome {
        Ok(()) => (None, None),
        Err(e) => (
            Some(
                e.body()
                    .map(|b| b.code.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "ERROR".into()),
            ),
            Some(e.to_string()),
        ),
    };
    TargetResult {
        kind,
        target: target.into(),
        delivered: outcome.is_ok(),
        code,
        description,
    }
}

fn test_verdict(notifier: &LineWorksNotifier, last: Option<&TestNotificationStatus>) -> Verdict {
    let Some(last) = last else {
        return Verdict::new(
            ConditionType::TestNotified,
            Truth::Unknown,
            Reason::NotRequested,
            "no test notification yet",
        );
    };
    let failed: Vec<&TargetResult> = last.targets.iter().filter(|t| !t.delivered).collect();
    match last.result {
        DeliveryResult::Delivered => Verdict::new(
            ConditionType::TestNotified,
            Truth::True,
            Reason::TestNotificationDelivered,
            format!(
                "test notification {} delivered to {}",
                last.id,
                last.targets
                    .iter()
                    .map(|t| t.target.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ),
        DeliveryResult::Sending => Verdict::new(
            ConditionType::TestNotified,
            Truth::Unknown,
            Reason::TestNotificationFailed,
            format!(
                "test notification {} was interrupted while sending; its result is unknown and it is not resent: change spec.testNotification.id to send another",
                last.id
            ),
        ),
        _ => {
            let user_missing = failed
                .iter()
                .any(|t| t.kind == TargetKind::User && t.code.as_deref() == Some("NOT_FOUND"));
            let details = failed
                .iter()
                .map(|t| {
                    format!(
                        "{} {}: {}",
                        match t.kind {
                            TargetKind::User => "user",
                            TargetKind::Room => "room",
                        },
                        t.target,
                        t.description.as_deref().unwrap_or("failed")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if user_missing {
                Verdict::new(
                    ConditionType::TestNotified,
                    Truth::False,
                    Reason::DefaultUserNotFound,
                    format!(
                        "LINE WORKS has no user {}: check LINE WORKS admin screen > Members (deleted?) and spec.defaultUser, then change spec.testNotification.id ({details})",
                        notifier.spec.default_user_login_id()
                    ),
                )
            } else {
                Verdict::new(
                    ConditionType::TestNotified,
                    Truth::False,
                    Reason::TestNotificationFailed,
                    format!(
                        "test notification {} failed: {details}; fix it and change spec.testNotification.id",
                        last.id
                    ),
                )
            }
        }
    }
}

fn test_not_requested() -> Verdict {
    Verdict::new(
        ConditionType::TestNotified,
        Truth::Unknown,
        Reason::NotRequested,
        "set spec.testNotification.id to send a test notification",
    )
}

fn test_waiting(id: &str) -> Verdict {
    Verdict::new(
        ConditionType::TestNotified,
        Truth::Unknown,
        Reason::Reconciling,
        format!("test notification {id} waits until Authorized and BotInService are True"),
    )
}

/// Ready=False (or Unknown while `blocker` is Unknown) with the blocking condition's message.
fn ready_blocked_by(blocker: &Verdict, false_reason: Reason) -> Verdict {
    let (status, reason) = match blocker.status {
        Truth::False => (Truth::False, false_reason),
        _ => (Truth::Unknown, Reason::Reconciling),
    };
    Verdict::new(
        ConditionType::Ready,
        status,
        reason,
        format!("{}: {}", blocker.type_, blocker.message),
    )
}

/// Ready summarises the other three.
fn summarize(notifier: &LineWorksNotifier, findings: &mut Findings) {
    let current = |type_: ConditionType, findings: &Findings| -> Option<Verdict> {
        findings.get(type_).cloned().or_else(|| {
            let c = notifier
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == type_.as_str())?
                .clone();
            let status = match c.status.as_str() {
                "True" => Truth::True,
                "False" => Truth::False,
                _ => Truth::Unknown,
            };
            Some(Verdict::new(type_, status, Reason::Reconciling, c.message))
        })
    };
    if !notifier.spec.suspend && findings.get(ConditionType::BotInService).is_none() {
        findings.set(Verdict::new(
            ConditionType::BotInService,
            Truth::Unknown,
            Reason::NotAuthorized,
            "waiting for Authorized",
        ));
    }
    if findings.get(ConditionType::TestNotified).is_none() && !notifier.spec.suspend {
        let verdict = match &notifier.spec.test_notification {
            None => test_not_requested(),
            Some(r)
                if findings
                    .status
                    .last_test_notification
                    .as_ref()
                    .is_some_and(|t| t.id == r.id) =>
            {
                test_verdict(notifier, findings.status.last_test_notification.as_ref())
            }
            Some(r) => test_waiting(&r.id),
        };
        findings.set(verdict);
    }
    let ready = if notifier.spec.suspend {
        Verdict::new(
            ConditionType::Ready,
            Truth::False,
            Reason::Suspended,
            "suspended: set spec.suspend to false to resume",
        )
    } else {
        let auth = current(ConditionType::Authorized, findings);
        let bot = current(ConditionType::BotInService, findings);
        let test = current(ConditionType::TestNotified, findings);
        match (auth, bot, test) {
            (Some(a), _, _) if !a.is_true() => ready_blocked_by(&a, Reason::NotAuthorized),
            (Some(_), Some(b), _) if !b.is_true() => ready_blocked_by(&b, Reason::BotNotInService),
            (Some(_), Some(_), Some(t)) if t.status == Truth::False => Verdict::new(
                ConditionType::Ready,
                Truth::False,
                Reason::TestNotificationFailed,
                format!("TestNotified: {}", t.message),
            ),
            (Some(_), Some(_), _) => Verdict::new(
                ConditionType::Ready,
                Truth::True,
                Reason::NotifierReady,
                match notifier.spec.room() {
                    Some(room) => format!(
                        "visitor notifications go to {} (fallback DM) and room {room}",
                        notifier.spec.default_user_login_id()
                    ),
                    None => format!(
                        "visitor notifications go to {} (fallback DM), DM only",
                        notifier.spec.default_user_login_id()
                    ),
                },
            ),
            _ => Verdict::new(
                ConditionType::Ready,
                Truth::Unknown,
                Reason::Reconciling,
                "checking",
            ),
        }
    };
    findings.set(ready);
}
