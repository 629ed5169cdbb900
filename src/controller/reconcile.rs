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
use lineworks_client::LineWorksError;

use super::authorization::{Authorized, Authorizer, Renewal};
use super::context::Context;
use super::findings::Findings;
use super::metrics::{ReasonLabel, ResultLabel, Written};
use super::prefetch::Prefetched;
use super::verdict::{Verdict, not_in_service};
use super::{bot_checks, credentials, diagnosis, status, test_notification};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::contract::RECONCILE_REQUESTED_ANNOTATION;
use crate::api::deliverable::Deliverable;
use crate::api::{AuthMode, DeliveryResult, LineWorksNotifier};

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
    #[error(
        "Secret {0} appeared while new tokens were being stored and is not owned by this notifier; the tokens were not written into it"
    )]
    ForeignTokenSecret(String),
    #[error("the reconcile panicked (a bug; please report it): {0}")]
    Panicked(String),
    #[error("revoking the tokens: {0}")]
    Revocation(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub(super) fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Kube { action, source }
}

pub async fn reconcile(
    notifier: Arc<LineWorksNotifier>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    contain_panic(reconcile_unguarded(notifier, ctx)).await
}

/// Runs one reconcile so that a panic in it (a bug meeting one object's odd input) is that
/// object's error, retried with backoff, instead of unwinding through the controller's loop and
/// stopping every other notifier.
pub(super) async fn contain_panic(
    reconcile: impl std::future::Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(ReconcileError::Panicked(what))
        }
    }
}

async fn reconcile_unguarded(
    notifier: Arc<LineWorksNotifier>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = notifier.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<LineWorksNotifier> = Api::namespaced(ctx.client.clone(), &ns);
    let key = format!("{ns}/{}", notifier.name_any());
    // Woken (by its token Secret, say) before the watch delivered this controller's own last
    // write: work from the object as written, not from the copy it replaced.
    let notifier = if ctx
        .own_writes
        .superseded(&key, notifier.metadata.resource_version.as_deref())
    {
        match Box::pin(api.get_opt(&notifier.name_any()))
            .await
            .map_err(kube_err("re-reading the notifier"))?
        {
            Some(fresh) => Arc::new(fresh),
            None => return Ok(Action::await_change()),
        }
    } else {
        notifier
    };
    // The Secrets the checks start from are read while the finalizer is written.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let (finalized, prefetched) = tokio::join!(
        Box::pin(super::revocation::with_finalizer(
            &api,
            Arc::clone(&notifier),
            &ctx,
            &key
        )),
        Box::pin(Prefetched::read(&secrets, &notifier)),
    );
    let result = match finalized {
        // Boxed here and below: a reconcile's future is allocated for each notifier in flight
        // (a thousand new ones at once), and inline it was the size of every step at once
        // (41 KB); boxed, only the steps under way take memory.
        Ok(notifier) => Box::pin(finalize(&api, notifier, &ctx, prefetched)).await,
        Err(e) => Err(e),
    };
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabel {
            result: label.into(),
        })
        .inc();
    result
}

/// kube's finalizer helper: Apply runs the checks (the finalizer is there), Cleanup revokes.
async fn finalize(
    api: &Api<LineWorksNotifier>,
    notifier: Arc<LineWorksNotifier>,
    ctx: &Arc<Context>,
    prefetched: Prefetched,
) -> Result<Action, ReconcileError> {
    finalizer(api, super::revocation::FINALIZER, notifier, |event| async {
        match event {
            FinalizerEvent::Apply(n) => Box::pin(run(&n, ctx, prefetched)).await,
            FinalizerEvent::Cleanup(n) => Box::pin(super::revocation::cleanup(&n, ctx)).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

async fn run(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    mut prefetched: Prefetched,
) -> Result<Action, ReconcileError> {
    let ns = notifier.namespace().ok_or(ReconcileError::NoNamespace)?;
    let key = format!("{ns}/{}", notifier.name_any());
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut findings = Findings::new(notifier);
    let mut recheck_wait = None;
    // The relay's caller token Secret does not depend on the checks: made meanwhile.
    let caller_token =
        super::caller_token::ensure(&secrets, notifier, ctx, prefetched.caller_secret.take());
    let checks = async {
        if notifier.spec.suspend {
            findings.set(not_in_service(
                Reason::Suspended,
                "spec.suspend is true (このチャットアプリケーションを使用する is off): no checks, no token renewal, the relay refuses notifications; set suspend: false to resume",
            ));
            // Nothing to check while suspended: the status above is the answer to a re-check.
            if let Some(requested) = recheck_requested(notifier) {
                findings.status.last_handled_reconcile_at = Some(requested.to_string());
            }
        } else {
            // A person asked for a re-check (after a fix, or a change, in LINE WORKS): forget
            // the last pass so the bot checks run now.
            let recheck = recheck_requested(notifier)
                .map(|requested| (requested, ctx.recheck_allowed(&key, SystemTime::now())));
            if let Some((_, Ok(()))) = recheck {
                ctx.set_verified(&key, None);
                findings.status.bot_checks_passed = None;
            }
            steps(
                notifier,
                ctx,
                &key,
                (&notifiers, &secrets),
                prefetched,
                &mut findings,
            )
            .await?;
            match recheck {
                Some((requested, Ok(()))) => {
                    findings.status.last_handled_reconcile_at = Some(requested.to_string());
                }
                Some((_, Err(wait))) => recheck_wait = Some(wait),
                None => {}
            }
        }
        Ok::<(), ReconcileError>(())
    };
    let (caller_token, checked) = tokio::join!(Box::pin(caller_token), Box::pin(checks));
    checked?;
    findings.status.caller_token_secret_name =
        caller_token.map_err(kube_err("generating the caller token Secret"))?;
    for verdict in diagnosis::summarize(
        notifier,
        &findings.verdicts,
        findings.status.last_test_notification.as_ref(),
    ) {
        findings.set(verdict);
    }
    Box::pin(report(notifier, ctx, &notifiers, &mut findings)).await?;

    // Not Ready: look again with backoff, since most fixes happen in LINE WORKS (console, admin
    // screen, talk room), which sends no event here. Changes to the notifier or its Secrets
    // trigger a reconcile at once anyway.
    let ready = findings.is_true(ConditionType::Ready);
    let next = if findings.transient || (!ready && !notifier.spec.suspend) {
        Some(ctx.backoff(&key))
    } else {
        ctx.reset_backoff(&key);
        findings
            .requeue
            .map(|after| after.max(Duration::from_secs(1)))
    };
    // A re-check that had to wait for the floor runs when it has passed.
    Ok(match next.into_iter().chain(recheck_wait).min() {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Writes status, counts the conditions left not True, and publishes an Event per transition.
async fn report(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    notifiers: &Api<LineWorksNotifier>,
    findings: &mut Findings,
) -> Result<(), ReconcileError> {
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
    // Reconciling or Stalled for GitOps tools: no Event of their own (the condition that decided
    // them has one), present only while True.
    let progress = super::progress::verdict(findings);
    let all: Vec<Verdict> = findings.verdicts.iter().cloned().chain(progress).collect();
    findings.status.conditions = status::merge(&old, &all, notifier.metadata.generation, &now);
    findings.status.conditions.retain(|c| {
        super::progress::TYPES
            .iter()
            .all(|t| c.type_ != t.as_str() || all.iter().any(|v| v.type_ == *t))
    });
    findings.status.observed_generation = notifier.metadata.generation;
    observe(ctx, notifier, findings);
    findings.status.delivering =
        Some(Deliverable::judge(&notifier.spec, &findings.status.conditions).delivering());
    if status::apply(notifiers, notifier, &findings.status)
        .await
        .map_err(kube_err("writing status"))?
    {
        ctx.metrics.wrote(Written::Status);
        ctx.own_writes.wrote_over(
            &format!(
                "{}/{}",
                notifier.namespace().unwrap_or_default(),
                notifier.name_any()
            ),
            notifier.metadata.resource_version.clone(),
        );
    }
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
    status::publish(ctx, notifier, &changed_refs).await;
    Ok(())
}

async fn steps(
    notifier: &LineWorksNotifier,
    ctx: &Context,
    key: &str,
    (notifiers, secrets): (&Api<LineWorksNotifier>, &Api<Secret>),
    prefetched: Prefetched,
    findings: &mut Findings,
) -> Result<(), ReconcileError> {
    let lineworks = match ctx.lineworks(notifier) {
        Ok(client) => client,
        Err(verdict) => {
            ctx.set_verified(key, None);
            findings.status.bot_checks_passed = None;
            findings.set(verdict);
            return Ok(());
        }
    };
    let checked = match prefetched.credentials {
        Some(found) => credentials::check(found, notifier),
        None => credentials::load(secrets, notifier)
            .await
            .map_err(kube_err("reading the credentials Secret"))?,
    };
    let credentials = match checked {
        Ok(c) => c,
        Err(verdict) => {
            ctx.set_verified(key, None);
            findings.status.bot_checks_passed = None;
            findings.set(verdict);
            return Ok(());
        }
    };
    // Budgets are per domain and app: another app naming this domain paces on its own.
    let lineworks = lineworks.for_app(&credentials.fingerprint);
    let authorizer = Authorizer {
        notifier,
        ctx,
        secrets,
        lineworks: &lineworks,
        credentials: &credentials,
        token_secret: std::sync::Mutex::new(prefetched.token_secret),
    };
    // The bot checks are the token's first use: a new token is stored meanwhile.
    let first_checks =
        async |authorized: &Authorized, findings: &mut Findings| match bot_checks::remembered(
            ctx, key, notifier, findings, authorized,
        ) {
            Some(verdict) => {
                findings.set(verdict);
                None
            }
            None => Some(
                Box::pin(bot_checks::check(
                    notifier,
                    &lineworks,
                    &authorized.token,
                    findings,
                ))
                .await,
            ),
        };
    let Some((mut authorized, checked)) =
        Box::pin(authorizer.authorize_with(Renewal::WhenDue, findings, first_checks)).await?
    else {
        return Ok(());
    };

    if let Some(mut outcome) = checked {
        if matches!(outcome, Err(LineWorksError::Unauthorized { .. })) {
            // The token died early (revoked, password changed): get a new one once and retry.
            let Some(renewed) = authorizer.authorize(Renewal::Now, findings).await? else {
                return Ok(());
            };
            authorized = renewed;
            outcome = Box::pin(bot_checks::check(
                notifier,
                &lineworks,
                &authorized.token,
                findings,
            ))
            .await;
            if matches!(outcome, Err(LineWorksError::Unauthorized { .. }))
                && SystemTime::now() >= authorized.expires_at
            {
                // The renewed token lapsed before its check was answered (a token of
                // seconds, a slow machine): that says nothing of the app's authorization.
                ctx.set_verified(key, None);
                findings.status.bot_checks_passed = None;
                findings.diagnose(diagnosis::renewed_token_lapsed());
                return Ok(());
            }
        }
        bot_checks::record(ctx, key, notifier, &authorized, outcome, findings);
    }
    findings.requeue = Some(
        authorized
            .renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    );
    let sent_before = findings
        .status
        .last_test_notification
        .as_ref()
        .map(|t| (t.id.clone(), t.sent_at.clone()));
    Box::pin(test_notification::run(
        notifier,
        notifiers,
        &lineworks,
        &authorized.token,
        findings,
    ))
    .await?;
    // A test notification sent now that did not reach every target is news the remembered
    // pass predates (the bot left the room, a user was deleted): the next reconcile, which
    // backoff brings soon since the notifier is not Ready, checks again and says which.
    let failed_now = findings
        .status
        .last_test_notification
        .as_ref()
        .is_some_and(|t| {
            sent_before.as_ref() != Some(&(t.id.clone(), t.sent_at.clone()))
                && t.result != DeliveryResult::Delivered
        });
    if failed_now {
        ctx.set_verified(key, None);
        findings.status.bot_checks_passed = None;
    }
    Ok(())
}

/// The notifier's gauges, from what this reconcile concluded.
fn observe(ctx: &Context, notifier: &LineWorksNotifier, findings: &Findings) {
    let ready = findings
        .verdicts
        .iter()
        .find(|v| v.type_ == ConditionType::Ready);
    let unix = |t: &Option<Time>| t.as_ref().map(|t| t.0.as_second());
    ctx.metrics.notifiers.observe(
        &notifier.namespace().unwrap_or_default(),
        &notifier.name_any(),
        &super::notifier_gauges::Observed {
            ready: ready.is_some_and(Verdict::is_true),
            reason: ready.map_or(Reason::Reconciling, Verdict::event_reason),
            access_token_expires: unix(&findings.status.access_token_expires_at),
            // Only where a person must act when it lapses: a serviceAccount notifier replaces a
            // lapsed refresh token with a JWT grant on its own.
            refresh_token_expires: (notifier.spec.auth.mode == AuthMode::UserAccount)
                .then(|| unix(&findings.status.refresh_token_expires_at))
                .flatten(),
        },
    );
}

/// The re-check a person asked for and the controller has not acted on yet, if any: the
/// annotation's value, of which the first 256 bytes (at a character boundary) count, so a tenant's
/// 256 KiB annotation is not copied into status.
fn recheck_requested(notifier: &LineWorksNotifier) -> Option<&str> {
    let requested = notifier.annotations().get(RECONCILE_REQUESTED_ANNOTATION)?;
    let mut end = requested.len().min(256);
    while !requested.is_char_boundary(end) {
        end -= 1;
    }
    let requested = &requested[..end];
    let handled = notifier
        .status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_deref());
    (handled != Some(requested)).then_some(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_is_an_error_of_that_object() {
        let panicking = async {
            let input: Vec<u8> = Vec::new();
            // Index out of range, as a bug meeting odd input would.
            let byte = input[usize::from(input.is_empty())];
            Ok(Action::requeue(Duration::from_secs(u64::from(byte))))
        };
        match contain_panic(panicking).await {
            Err(ReconcileError::Panicked(what)) => {
                assert!(what.contains("index out of bounds"), "{what}")
            }
            other => panic!("not contained: {other:?}"),
        }
        // The next reconcile runs normally.
        let fine = contain_panic(async { Ok(Action::await_change()) }).await;
        assert!(fine.is_ok());
    }

    #[test]
    fn a_recheck_request_is_cut_to_256_bytes_at_a_character_boundary() {
        let mut n = LineWorksNotifier::new(
            "n",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "d", "defaultUser": "u",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
            }))
            .expect("spec"),
        );
        let long = "あ".repeat(200);
        n.metadata.annotations = Some([(RECONCILE_REQUESTED_ANNOTATION.to_string(), long)].into());
        let requested = recheck_requested(&n).expect("pending").to_string();
        assert_eq!(requested, "あ".repeat(85));
        n.status = Some(crate::api::LineWorksNotifierStatus {
            last_handled_reconcile_at: Some(requested),
            ..Default::default()
        });
        assert_eq!(recheck_requested(&n), None, "handled once recorded");
    }

    /// A thousand new notifiers put a thousand reconciles in flight at once; each is allocated
    /// at its future's size. Inline steps made it 41 KB (the largest share of the controller's
    /// heap at the peak of 1,000 new notifiers); with the steps boxed it is a few KB.
    #[tokio::test]
    async fn a_reconcile_in_flight_holds_a_few_kilobytes() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let ctx = Arc::new(
            Context::new(
                client,
                Default::default(),
                Default::default(),
                super::super::oauth_state::StateKey::ephemeral(),
            )
            .expect("context"),
        );
        let n = Arc::new(LineWorksNotifier::new(
            "n",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "d", "defaultUser": "u",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
            }))
            .expect("spec"),
        ));
        let size = std::mem::size_of_val(&reconcile(Arc::clone(&n), ctx));
        assert!(size <= 6 * 1024, "a reconcile's future is {size} bytes");
    }
}
